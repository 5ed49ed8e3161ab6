"""docker-compose.yml and the Dockerfile run the processes the docs describe, with pinned images.

No Docker needed: the files are read (the compose file with PyYAML, a test dependency), not run.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

#: the subcommands of the `tracking` command line
TRACKING_SUBCOMMANDS = {"start", "lookup", "stop", "ls", "explain", "migrate", "supervise", "check", "demo"}
#: a tag that names at least a major.minor version (``16.4``, ``3.13-management``, ``3.11-slim``)
PINNED_TAG = re.compile(r"^v?\d+\.\d+([.-][A-Za-z0-9.-]+)?$")


# -- reading the files ------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    found = load_compose().get("services")
    assert isinstance(found, dict) and found, "docker-compose.yml defines no services"
    return found


def argv(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def commands(services: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    return {name: argv(service) for name, service in services.items() if "command" in service}


def celery_app(words: list[str]) -> str | None:
    for i, word in enumerate(words):
        if word in ("-A", "--app") and i + 1 < len(words):
            return words[i + 1]
        if word.startswith("--app="):
            return word.removeprefix("--app=")
        if word.startswith("-A") and len(word) > 2:
            return word[2:]
    return None


# -- the tests --------------------------------------------------------------------------------------


def test_the_compose_file_defines_the_services_the_docs_describe(services: dict[str, Any]) -> None:
    assert {"postgres", "redis", "rabbitmq", "migrate", "worker", "beat", "flower"} <= set(services)


def test_every_service_that_runs_our_image_has_a_command(services: dict[str, Any]) -> None:
    built = {name: service for name, service in services.items() if "build" in service}
    assert built, "no service builds the Dockerfile"
    assert [name for name, service in built.items() if "command" not in service] == []


def test_every_command_runs_tracking_or_celery(services: dict[str, Any]) -> None:
    wrong = {
        name: words[:1]
        for name, words in commands(services).items()
        if words[:1] not in (["tracking"], ["celery"])
    }
    assert wrong == {}


def test_every_celery_command_names_the_tracking_app(services: dict[str, Any]) -> None:
    apps = {name: celery_app(words) for name, words in commands(services).items() if words[0] == "celery"}
    assert apps, "no service runs celery"
    assert {name: app for name, app in apps.items() if app != "tracking"} == {}


def test_every_tracking_command_is_a_subcommand_of_the_cli(services: dict[str, Any]) -> None:
    used = {name: words[1:2] for name, words in commands(services).items() if words[0] == "tracking"}
    assert used, "no service runs the tracking command"
    assert {name: sub for name, sub in used.items() if not sub or sub[0] not in TRACKING_SUBCOMMANDS} == {}


def test_the_worker_beat_and_flower_run_the_processes_the_docs_name(services: dict[str, Any]) -> None:
    found = commands(services)
    assert found["worker"][3:6] == ["worker", "-P", "threads"]
    assert found["beat"][3] == "beat"
    assert found["flower"][3] == "flower"
    assert found["migrate"] == ["tracking", "migrate"]


def test_every_depends_on_target_is_a_service_of_the_file(services: dict[str, Any]) -> None:
    missing = {}
    for name, service in services.items():
        targets = service.get("depends_on") or []
        unknown = sorted(set(targets) - set(services))
        if unknown:
            missing[name] = unknown
    assert missing == {}


def test_every_depends_on_waits_for_health_or_completion(services: dict[str, Any]) -> None:
    allowed = {"service_healthy", "service_completed_successfully"}
    loose = {}
    for name, service in services.items():
        targets = service.get("depends_on") or {}
        assert isinstance(targets, dict), f"{name}: depends_on must name a condition for each service"
        conditions = {target: (spec or {}).get("condition") for target, spec in targets.items()}
        if any(condition not in allowed for condition in conditions.values()):
            loose[name] = conditions
    assert loose == {}


def test_every_service_a_condition_waits_on_has_a_healthcheck(services: dict[str, Any]) -> None:
    unhealthy = set()
    for service in services.values():
        for target, spec in (service.get("depends_on") or {}).items():
            if spec["condition"] == "service_healthy" and "healthcheck" not in services[target]:
                unhealthy.add(target)
    assert unhealthy == set()


def test_every_image_is_pinned_to_a_version_tag(services: dict[str, Any]) -> None:
    loose = {}
    for name, service in services.items():
        if "image" not in service:
            continue
        _repository, _, tag = str(service["image"]).rpartition(":")
        if not _repository or "/" in tag or not PINNED_TAG.match(tag):
            loose[name] = service["image"]
    assert loose == {}


def test_the_dockerfile_base_images_are_pinned_to_a_version_tag() -> None:
    bases = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert bases, "the Dockerfile has no FROM line"
    assert [image for image in bases if not PINNED_TAG.match(image.rpartition(":")[2])] == []


def test_the_rabbitmq_broker_starts_only_with_its_profile(services: dict[str, Any]) -> None:
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert [
        name for name, service in services.items() if "rabbitmq" in (service.get("depends_on") or {})
    ] == []


def test_every_app_service_reads_the_registry_and_broker_from_the_environment(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        if "build" not in service:
            continue
        environment = service["environment"]
        assert environment["TRACKING_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert "redis://redis:6379/0" in environment["CELERY_BROKER_URL"], name


def test_the_tracker_modules_the_services_import_can_be_imported(services: dict[str, Any]) -> None:
    modules = {
        module.strip()
        for service in services.values()
        for module in str((service.get("environment") or {}).get("TRACKING_IMPORTS", "")).split(",")
        if module.strip()
    }
    assert modules, "no service sets TRACKING_IMPORTS"
    for module in sorted(modules):
        importlib.import_module(module)


ALERTS = ROOT / "deploy" / "prometheus" / "tracking-alerts.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"


def test_the_worker_serves_metrics_on_a_port_published_on_loopback(services: dict[str, Any]) -> None:
    worker = services["worker"]
    port = str(worker["environment"]["TRACKING_METRICS_PORT"])
    assert f"127.0.0.1:{port}:{port}" in worker["ports"]
    assert f"worker:{port}" in PROMETHEUS.read_text(encoding="utf-8")


def test_prometheus_loads_the_alert_rules_the_repository_ships(services: dict[str, Any]) -> None:
    mounts = services["prometheus"]["volumes"]
    assert any(m.startswith("./deploy/prometheus/tracking-alerts.yml:") for m in mounts)
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    mounted = {m.split(":")[1] for m in mounts}
    assert set(config["rule_files"]) <= mounted


def test_the_alert_rules_watch_dead_trackers_lost_workers_and_the_supervisor_with_real_metrics() -> None:
    from tracking.metrics import COUNTED_EVENTS

    emitted = {
        "tracking_trackers",
        "tracking_restarts_total",
        "tracking_recovery_seconds",
        "tracking_supervisor_last_sweep_age_seconds",
        "tracking_registry_up",
        *(f"tracking_{name}_total" for name in COUNTED_EVENTS),
    }
    rules = [
        rule
        for group in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
    ]
    assert {"TrackingDeadTrackers", "TrackingWorkersLost", "TrackingSupervisorNotSweeping"} <= {
        rule["alert"] for rule in rules
    }
    for rule in rules:
        used = set(re.findall(r"\btracking_[a-z_]+", rule["expr"]))
        assert used and used <= emitted, f"{rule['alert']} uses metrics nobody emits: {used - emitted}"
