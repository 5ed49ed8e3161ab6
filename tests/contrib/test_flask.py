"""The Flask extension, driven through the example app's test client against a real worker on
PostgreSQL + Redis."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from flask import Flask
from flask.testing import FlaskClient

import tracking
from examples.flask_app.app import create_app
from examples.flask_app.trackers import TransactionTracker
from tests.harness import ROOT, Cluster, Stack, wait_for
from tracking import registry
from tracking.contrib.flask import Tracking

FOREVER = 1_000_000  # confirmations no test waits for


pytestmark = [
    pytest.mark.stacks("postgres-redis", imports="examples.flask_app.trackers"),
    pytest.mark.cluster(workers=("w1",), beat=True),
]


@pytest.fixture(scope="module")
def app(stack: Stack) -> Flask:
    """The example app, configured from the environment as in production (and the test session's
    Redis key prefix through its ``CELERY`` settings)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in stack.web_env().items():
            mp.setenv(key, value)
        return create_app(
            {"TESTING": True, "CELERY": {"broker_transport_options": stack.transport_options()}}
        )


@pytest.fixture
def client(app: Flask, cluster: Cluster) -> Iterator[FlaskClient]:
    with app.app_context():
        app.extensions["tracking"].make_current()
    with app.test_client() as client:
        yield client


def running(client: FlaskClient, txid: str, other_than: str | None = None) -> dict[str, Any] | None:
    """The tracker's JSON once it runs (under a task ID other than ``other_than``)."""
    response = client.get(f"/transactions/{txid}/tracker")
    body: dict[str, Any] = response.get_json()
    ok = response.status_code == 200 and body["status"] == "running" and body["task_id"] != other_than
    return body if ok and body["state"] is not None else None  # running, and checkpointed


def test_a_tracker_started_from_a_view_is_found_restarted_after_a_crash_and_gone_once_stopped(
    client: FlaskClient, txid: str
) -> None:
    response = client.post(f"/transactions/{txid}/track", json={"confirmations": FOREVER})
    assert response.status_code == 202
    started = response.get_json()
    assert started["transaction_id"] == txid and started["kind"] == "transaction"
    assert started["already_started"] is False
    assert response.headers["Location"] == f"/transactions/{txid}/tracker"

    first = wait_for(lambda: running(client, txid), what="the tracker to run")
    assert first["task_id"] == started["task_id"] and first["restarts"] == 0
    assert first["worker"].startswith("w1@") and first["state"]["required"] == FOREVER

    again = client.post(f"/transactions/{txid}/track", json={"confirmations": 3})
    assert again.status_code == 202 and again.get_json()["already_started"] is True
    assert again.get_json()["task_id"] == first["task_id"]

    TransactionTracker.stop(txid, reason="crash")
    second = wait_for(lambda: running(client, txid, other_than=first["task_id"]), what="the restart")
    assert second["restarts"] == 1 and second["state"]["required"] == FOREVER

    TransactionTracker.stop(txid)
    response = client.get(f"/transactions/{txid}/tracker")
    assert response.status_code == 404 and response.get_json() == {"error": "not found"}


def test_a_tracker_that_reaches_its_confirmations_leaves_and_its_lookup_answers_404(
    client: FlaskClient, txid: str
) -> None:
    assert client.post(f"/transactions/{txid}/track", json={"confirmations": 2}).status_code == 202
    wait_for(
        lambda: client.get(f"/transactions/{txid}/tracker").status_code == 404,
        what="the tracker to finish",
    )
    assert client.get(f"/transactions/{txid}/tracker").get_json() == {"error": "not found"}


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/transactions/{long}/track", {}, 400),
        ("/transactions/txn_1/track", {"confirmations": "many"}, 400),
        ("/transactions/txn_1/track", {"confirmations": 0}, 400),
    ],
)
def test_bad_input_to_the_track_view_is_a_400_and_starts_nothing(
    client: FlaskClient, path: str, body: dict[str, Any], status: int
) -> None:
    response = client.post(path.format(long="x" * 300), json=body)
    assert response.status_code == status and "error" in response.get_json()
    assert TransactionTracker.lookup("txn_1") is None


def test_flask_tracking_lookup_and_ls_answer_with_the_app_s_settings(client: FlaskClient, app: Flask) -> None:
    txid = "txn_cli_flask"
    client.post(f"/transactions/{txid}/track", json={"confirmations": FOREVER})
    ref = wait_for(lambda: running(client, txid), what="the tracker to run")
    runner = app.test_cli_runner()

    result = runner.invoke(args=["tracking", "lookup", txid, "--kind", "transaction", "--json"])
    assert result.exit_code == 0, result.output
    assert '"task_id": "{}"'.format(ref["task_id"]) in result.output

    result = runner.invoke(args=["tracking", "ls", "--kind", "transaction"])
    assert result.exit_code == 0 and txid in result.output

    TransactionTracker.stop(txid)
    result = runner.invoke(args=["tracking", "lookup", txid, "--kind", "transaction"])
    assert result.exit_code == 1 and "no live transaction tracker" in result.output


def test_flask_tracking_migrate_creates_the_registry_in_the_configured_database(
    stack: Stack, pg_databases: Callable[[], str]
) -> None:
    url = pg_databases()
    app = Flask("migrating")
    app.config.update(TRACKING_DATABASE_URL=url, CELERY_BROKER_URL=stack.broker_url)
    Tracking(app)

    result = app.test_cli_runner().invoke(args=["tracking", "migrate"])

    assert result.exit_code == 0, result.output
    assert "migrated to head" in result.output
    engine = sa.create_engine(url)
    try:
        assert "tracking_trackers" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
        registry.dispose(app.extensions["tracking"].settings)


def test_flask_tracking_lists_the_tracking_commands(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["tracking", "--help"])
    assert result.exit_code == 0
    commands, exit_codes = result.output.split("Commands:")[1].split("Exit codes:")
    listed = re.findall(r"^  (\w+)  ", commands, flags=re.MULTILINE)
    assert listed == ["start", "lookup", "stop", "ls", "explain", "migrate", "supervise", "check"]
    assert "3    the registry database is unavailable" in exit_codes


def sqlite_app(name: str, tmp_path: Path) -> Flask:
    """An app of the example's trackers on a registry of its own (no worker needed)."""
    app = Flask(name)
    app.config.update(
        TRACKING_DATABASE_URL=f"sqlite:///{tmp_path}/{name}.sqlite3",
        TRACKING_BROKER_FOLDER=str(tmp_path / "broker"),
        TRACKING_IMPORTS="examples.flask_app.trackers",
    )
    Tracking(app)
    return app


def test_flask_tracking_help_is_the_flask_command_s_and_describes_every_option(tmp_path: Path) -> None:
    runner = sqlite_app("helped", tmp_path).test_cli_runner()
    result = runner.invoke(args=["tracking", "lookup", "--help"], prog_name="flask")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: flask tracking lookup [OPTIONS] TRANSACTION_ID")
    assert "usage: tracking lookup" not in result.output.lower()
    assert "The tracker kind" in result.output and "Print the tracker as a JSON object" in result.output

    result = runner.invoke(args=["tracking", "list", "--help"], prog_name="flask")
    assert result.exit_code == 0 and result.output.startswith("Usage: flask tracking list [OPTIONS]")
    unknown = runner.invoke(args=["tracking", "lookup", "txn_1", "--kind", "no-such-kind"])
    assert unknown.exit_code == 2 and "unknown kind 'no-such-kind'" in unknown.output
    usage = runner.invoke(args=["tracking", "ls", "--status", "sleeping"])
    assert usage.exit_code == 2 and "Invalid value for '--status'" in usage.output


def test_the_flask_command_line_names_flask_tracking_in_its_usage(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TRACKING_DATABASE_URL": f"sqlite:///{tmp_path}/registry.sqlite3",
        "TRACKING_BROKER_FOLDER": str(tmp_path / "broker"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "examples.flask_app.app", "tracking", "lookup", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "flask tracking lookup [OPTIONS] TRANSACTION_ID" in result.stdout
    assert "usage: tracking lookup" not in result.stdout.lower()


# -- configuration (no worker needed) ---------------------------------------------------------------


def test_init_app_reads_tracking_keys_from_app_config_once_and_stores_itself(tmp_path: Path) -> None:
    app = Flask("configured")
    app.config.update(
        TRACKING_DATABASE_URL=f"sqlite:///{tmp_path}/registry.sqlite3",
        TRACKING_BROKER_FOLDER=str(tmp_path / "broker"),
        TRACKING_LEASE_SECONDS=12,
        TRACKING_IMPORTS="examples.flask_app.trackers",
    )
    extension = Tracking(app)

    app.config["TRACKING_LEASE_SECONDS"] = 99  # read once: later changes are not seen
    assert app.extensions["tracking"] is extension
    assert extension.settings.database_url == f"sqlite:///{tmp_path}/registry.sqlite3"
    assert extension.settings.lease_seconds == 12.0
    assert extension.settings.imports == ("examples.flask_app.trackers",)
    assert extension.celery.conf.task_serializer == "json"  # built with the recommended settings
    assert "tracking.transaction" in extension.celery.tasks
    assert tracking.celery.current_settings() is extension.settings


def test_the_celery_mapping_of_app_config_configures_the_celery_app_the_extension_builds() -> None:
    app = Flask("celery-mapping")
    app.config["CELERY"] = {"broker_url": "redis://127.0.0.1:6379/15", "task_default_queue": "web"}
    extension = Tracking(app)
    assert extension.settings.broker_url == "redis://127.0.0.1:6379/15"
    assert extension.celery.conf.broker_url == "redis://127.0.0.1:6379/15"
    assert extension.celery.conf.task_default_queue == "web"
    assert extension.celery.conf.worker_prefetch_multiplier == 1  # the recommended settings beneath


def test_the_environment_wins_over_app_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKING_LEASE_SECONDS", "40")
    app = Flask("from-env")
    app.config.update(TRACKING_LEASE_SECONDS=12, TRACKING_BROKER_FOLDER=str(tmp_path / "broker"))
    assert Tracking(app).settings.lease_seconds == 40.0


def test_a_misspelt_tracking_key_in_app_config_is_refused(tmp_path: Path) -> None:
    app = Flask("typo")
    app.config.update(TRACKING_LEASE_SECOND=12, TRACKING_BROKER_FOLDER=str(tmp_path / "broker"))
    with pytest.raises(ValueError, match="TRACKING_LEASE_SECOND"):
        Tracking(app)


def test_the_application_s_own_celery_app_is_kept_and_gets_the_tracker_tasks(tmp_path: Path) -> None:
    celery_app = Celery("users-own", set_as_current=False)
    celery_app.conf.update(
        broker_url="redis://127.0.0.1:6379/15",
        task_default_queue="users-queue",
        beat_schedule={"nightly": {"task": "users.nightly", "schedule": 86400.0}},
    )
    app = Flask("own-celery")
    app.config.update(TRACKING_DATABASE_URL=f"sqlite:///{tmp_path}/registry.sqlite3")
    extension = Tracking(app, celery=celery_app)

    assert extension.celery is celery_app
    assert extension.settings.broker_url == "redis://127.0.0.1:6379/15"  # read from the Celery app
    assert celery_app.conf.task_default_queue == "users-queue"
    assert set(celery_app.conf.beat_schedule) == {"nightly", "tracking-supervisor"}
    assert "tracking.transaction" in celery_app.tasks and "tracking.supervise" in celery_app.tasks


def test_one_extension_serves_several_apps_and_an_app_cannot_register_two(tmp_path: Path) -> None:
    extension = Tracking()
    with pytest.raises(RuntimeError, match="not been initialised"):
        extension.settings  # noqa: B018
    apps = []
    for name in ("one", "two"):
        app = Flask(name)
        app.config.update(
            TRACKING_DATABASE_URL=f"sqlite:///{tmp_path}/{name}.sqlite3",
            TRACKING_BROKER_FOLDER=str(tmp_path / "broker"),
        )
        extension.init_app(app)
        apps.append(app)
    for app in apps:
        with app.app_context():
            assert extension.settings.database_url.endswith(f"/{app.name}.sqlite3")
    assert extension.settings.database_url.endswith("/two.sqlite3")  # outside: the last one
    with pytest.raises(RuntimeError, match="already been registered"):
        Tracking(apps[0])


def test_each_app_s_views_start_and_look_up_trackers_in_that_app_s_registry(tmp_path: Path) -> None:
    """Two apps in one process, one extension: inside an app context, start and lookup use that
    app's client, without make_current (outside any: the app initialised last)."""
    extension = Tracking()
    apps = []
    for name in ("left", "right"):
        app = Flask(name)
        app.config.update(
            TRACKING_DATABASE_URL=f"sqlite:///{tmp_path}/{name}.sqlite3",
            TRACKING_BROKER_FOLDER=str(tmp_path / f"broker-{name}"),
        )
        extension.init_app(app)
        with app.app_context():
            registry.migrate(extension.settings)
        apps.append(app)
    left, right = apps
    with left.app_context():
        TransactionTracker.start("t-left")
    with right.app_context():
        TransactionTracker.start("t-right")
        assert TransactionTracker.lookup("t-left") is None
        assert TransactionTracker.lookup("t-right") is not None
    with left.app_context():
        assert TransactionTracker.lookup("t-left") is not None
        assert TransactionTracker.lookup("t-right") is None
        assert extension.client.settings.database_url.endswith("/left.sqlite3")
    assert TransactionTracker.lookup("t-right") is not None  # outside: the app initialised last
    for app in apps:
        with app.app_context():
            registry.dispose(extension.settings)


def test_apps_that_share_a_celery_app_with_different_registries_are_refused(tmp_path: Path) -> None:
    shared = Celery("shared", set_as_current=False)
    extension = Tracking(celery=shared)
    apps = []  # kept alive: the extension holds its apps weakly
    for name in ("first", "second"):
        app = Flask(name)
        apps.append(app)
        app.config.update(
            TRACKING_DATABASE_URL=f"sqlite:///{tmp_path}/{name}.sqlite3",
            TRACKING_BROKER_FOLDER=str(tmp_path / "broker"),
        )
        if name == "first":
            extension.init_app(app)
        else:
            with pytest.raises(RuntimeError, match="share their tracking settings"):
                extension.init_app(app)
