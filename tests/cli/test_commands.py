"""Every ``tracking`` subcommand through its entry point, against PostgreSQL + Redis and a worker."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cli.conftest import CANARY, CANARY_STACK, Cli
from tests.harness import Cluster, Stack, running, wait_for
from tests.integration.trackers import Counter, SlowCounter

pytestmark = [CANARY_STACK, pytest.mark.cluster(workers=("w1",), beat=False)]


def test_start_enqueues_a_tracker_that_a_worker_runs_and_lookup_finds(
    cli: Cli, cluster: Cluster, txid: str
) -> None:
    result = cli("start", "--kind", "Counter", txid, "--json", "--arg", "until=100000")
    assert result.returncode == 0, result.stderr
    started = json.loads(result.stdout)
    assert started["transaction_id"] == txid and started["status"] == "pending"
    assert started["already_started"] is False

    wait_for(lambda: running(Counter, txid), what="the worker to run the tracker")
    result = cli("lookup", "--kind", "Counter", txid, "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["status"] == "running" and found["task_id"] == started["task_id"]
    assert found["worker"].startswith("w1@")

    text = cli("lookup", "--kind", "Counter", txid)
    assert text.returncode == 0
    assert any(line.split() == ["status", "running"] for line in text.stdout.splitlines())

    again = cli("start", "--kind", "Counter", txid, "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["already_started"] is True
    assert cli("stop", "--kind", "Counter", txid).returncode == 0


def test_the_kind_can_be_left_out_only_when_one_kind_is_imported(cli: Cli, txid: str) -> None:
    result = cli("start", txid)
    assert result.returncode == 2
    assert "--kind is required" in result.stderr and "Counter" in result.stderr
    # Another kind, on a queue no worker reads: it stays pending until stopped.
    demo = {"TRACKING_IMPORTS": "tracking.demo", "TRACKING_QUEUE": f"nobody-{txid}"}
    result = cli("start", txid, env=demo)
    assert result.returncode == 0, result.stderr
    assert "kind             demo" in result.stdout
    assert cli("stop", txid, env=demo).returncode == 0


def test_stop_deregisters_and_then_lookup_and_stop_exit_with_not_found(
    cli: Cli, cluster: Cluster, txid: str
) -> None:
    assert cli("start", "--kind", "Counter", txid).returncode == 0
    wait_for(lambda: running(Counter, txid), what="the tracker to run")
    result = cli("stop", "--kind", "Counter", txid)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"stopped Counter {txid} (normal)"

    lookup = cli("lookup", "--kind", "Counter", txid, "--json")
    assert lookup.returncode == 1
    assert json.loads(lookup.stdout) is None
    assert "no live Counter tracker" in lookup.stderr
    again = cli("stop", "--kind", "Counter", txid)
    assert again.returncode == 1 and "no Counter tracker is registered" in again.stderr


def test_stop_with_an_abnormal_reason_restarts_the_tracker(cli: Cli, cluster: Cluster, txid: str) -> None:
    assert cli("start", "--kind", "Counter", txid).returncode == 0
    first = wait_for(lambda: running(Counter, txid), what="the tracker to run")
    assert cli("stop", "--kind", "Counter", txid, "--reason", "crash").returncode == 0
    second = wait_for(lambda: running(Counter, txid, other_than=first.task_id), what="the restart")
    assert second.restarts == 1
    result = cli("lookup", "--kind", "Counter", txid, "--json")
    assert json.loads(result.stdout)["task_id"] == second.task_id
    stopped = cli("stop", "--kind", "Counter", txid, "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout) == {
        "kind": "Counter",
        "transaction_id": txid,
        "reason": "normal",
        "stopped": True,
    }


def test_a_stop_that_does_not_finish_in_time_exits_with_the_timeout_code(
    cli: Cli, cluster: Cluster, txid: str
) -> None:
    assert cli("start", "--kind", "SlowCounter", txid).returncode == 0
    wait_for(lambda: running(SlowCounter, txid), what="the tracker to run")
    result = cli("stop", "--kind", "SlowCounter", txid, "--timeout", "0")
    assert result.returncode == 4, result.stderr
    assert "did not exit within" in result.stderr
    wait_for(lambda: SlowCounter.lookup(txid) is None, what="the requested stop to happen anyway")


def test_ls_prints_a_table_and_json_filtered_by_status_kind_and_worker(
    cli: Cli, cluster: Cluster, txid: str
) -> None:
    fast, slow = f"{txid}-fast", f"{txid}-slow"
    assert cli("start", "--kind", "Counter", fast).returncode == 0
    assert cli("start", "--kind", "SlowCounter", slow).returncode == 0
    ref = wait_for(lambda: running(Counter, fast), what="the Counter to run")
    wait_for(lambda: running(SlowCounter, slow), what="the SlowCounter to run")

    result = cli("ls", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert isinstance(listed, list)
    by_id = {entry["transaction_id"]: entry for entry in listed}
    assert by_id[fast]["kind"] == "Counter" and by_id[slow]["kind"] == "SlowCounter"

    only_slow = json.loads(cli("ls", "--kind", "SlowCounter", "--json").stdout)
    assert {e["kind"] for e in only_slow} == {"SlowCounter"}
    assert slow in {e["transaction_id"] for e in only_slow}
    only_running = json.loads(cli("ls", "--status", "running", "--json").stdout)
    assert only_running and all(e["status"] == "running" for e in only_running)
    assert json.loads(cli("ls", "--status", "dead", "--json").stdout) == []
    on_w1 = json.loads(cli("ls", "--worker", str(ref.worker), "--json").stdout)
    assert {fast, slow} <= {e["transaction_id"] for e in on_w1}
    assert json.loads(cli("ls", "--worker", "nobody@nowhere", "--json").stdout) == []

    table = cli("ls", "--kind", "Counter")
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["KIND", "TRANSACTION", "ID", "STATUS", "RESTARTS", "WORKER"]
    (row,) = [r for r in rows if fast in r]
    assert row.split() == ["Counter", fast, "running", "0", str(ref.worker)]

    limited = cli("ls", "--limit", "1", "--json")
    assert len(json.loads(limited.stdout)) == 1 and "--limit" in limited.stderr
    assert cli("ls", "--status", "sleeping").returncode == 2
    for kind, each in (("Counter", fast), ("SlowCounter", slow)):
        assert cli("stop", "--kind", kind, each).returncode == 0


@pytest.mark.fleet
def test_explain_says_why_and_its_json_holds_the_same_facts(cli: Cli, cluster: Cluster, txid: str) -> None:
    assert cli("start", "--kind", "Counter", txid).returncode == 0
    ref = wait_for(lambda: running(Counter, txid), what="the tracker to run")

    text = cli("explain", "--kind", "Counter", txid)
    assert text.returncode == 0, text.stderr
    assert f"Counter {txid!r}: running (epoch 1, task {ref.task_id}, restarts 0)" in text.stdout
    assert f"running on {ref.worker}, lease renewed" in text.stdout
    facts = json.loads(cli("explain", "--kind", "Counter", txid, "--json").stdout)
    (entry,) = facts["entries"]
    assert entry["status"] == "running" and entry["task_id"] == ref.task_id
    assert entry["worker"] == ref.worker and entry["lease_renewed_ago"] is not None
    assert [e["event"] for e in facts["history"]][:2] == ["started", "running"]
    assert facts["supervisor"]["healthy"] is True, "the worker sweeps now and then"

    assert cli("stop", "--kind", "Counter", txid).returncode == 0
    gone = cli("explain", txid)  # no --kind: the imported kinds' histories are searched
    assert gone.returncode == 0, gone.stderr
    assert "not registered" in gone.stdout
    assert gone.stdout.splitlines()[-2].split()[-3:-1] == ["stopped", str(ref.worker)]
    facts = json.loads(cli("explain", txid, "--json").stdout)
    assert facts["registered"] is False
    assert (facts["history"][-1]["event"], facts["history"][-1]["detail"]) == ("stopped", "normal")

    never = cli("explain", "--kind", "Counter", f"{txid}-never", "--json")
    assert never.returncode == 1
    assert json.loads(never.stdout)["history"] == []


def test_bad_input_exits_with_code_2_and_changes_nothing(cli: Cli, txid: str) -> None:
    result = cli("start", "--kind", "Counter", "bad\x01id")
    assert result.returncode == 2 and "control characters" in result.stderr
    assert cli("start", "--kind", "NoSuchKind", txid).returncode == 2
    assert cli("start", "--kind", "Counter").returncode == 2, "neither an ID nor --from-file"
    assert cli("start", "--kind", "Counter", txid, "--arg", "novalue").returncode == 2
    assert cli("lookup", "--kind", "Counter", txid).returncode == 1, "nothing was started"
    missing = cli("start", "--kind", "Counter", "--from-file", "no-such-file.txt")
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    bad_import = cli("lookup", "--kind", "Counter", txid, env={"TRACKING_IMPORTS": "no_such_module"})
    assert bad_import.returncode == 2 and "no_such_module" in bad_import.stderr


@pytest.mark.fleet
def test_migrate_supervise_and_check(cli: Cli, stack: Stack, tmp_path: Path) -> None:
    migrate = cli("migrate")
    assert migrate.returncode == 0, migrate.stderr
    assert ":***@" in migrate.stdout, "the URL is printed, with its password masked"

    as_json = json.loads(cli("migrate", "--json").stdout)
    assert as_json["revision"] == "head" and ":***@" in as_json["database_url"]

    for args in (("supervise", "--once"), ("supervise", "--once", "--json")):
        sweep = cli(*args)
        assert sweep.returncode == 0, sweep.stderr
        counts = json.loads(sweep.stdout)
        assert {"lost_workers", "restarted", "republished"} <= set(counts)

    check = cli("check")
    assert check.returncode == 0, check.stdout
    assert check.stdout.startswith("ok:")
    assert json.loads(cli("check", "--json").stdout) == {"ok": True, "problems": []}
    (tmp_path / "pickly_config.py").write_text(
        "from tests.integration.worker_config import *  # noqa: F403\n"
        "accept_content = ['json', 'pickle']\n"
        "worker_prefetch_multiplier = 4\n"
    )
    env = {
        "CELERY_CONFIG_MODULE": "pickly_config",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), stack.env()["PYTHONPATH"]]),
    }
    refused = cli("check", env=env)
    assert refused.returncode == 1
    problems = [line for line in refused.stdout.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 2, refused.stdout
    refused_json = cli("check", "--json", env=env)
    assert refused_json.returncode == 1
    found = [problem.removeprefix("problem: ") for problem in problems]
    assert json.loads(refused_json.stdout) == {"ok": False, "problems": found}


def test_an_unreachable_registry_exits_with_code_3_and_no_password(cli: Cli, stack: Stack, txid: str) -> None:
    url = stack.database_url.replace("127.0.0.1:5432", "127.0.0.1:1")
    for args in (("lookup", "--kind", "Counter", txid), ("ls",), ("migrate",), ("explain", txid)):
        result = cli(*args, env={"TRACKING_DATABASE_URL": url})
        assert result.returncode == 3, (args, result.stderr)
        assert "registry database" in result.stderr and ":***@" in result.stderr


@pytest.mark.fleet
def test_no_command_output_contains_the_database_password(
    cli: Cli, stack: Stack, cluster: Cluster, txid: str
) -> None:
    """Every command, on success and on failure (the ``cli`` fixture checks each output too)."""
    assert CANARY in stack.database_url
    outputs = [
        cli("migrate"),
        cli("start", "--kind", "Crasher", txid, "--json"),
        cli("supervise", "--once"),
        cli("check"),
    ]
    wait_for(lambda: cli("lookup", "--kind", "Crasher", txid).returncode == 1, timeout=60, what="dead")
    outputs += [
        cli("ls", "--json"),
        cli("ls", "--status", "dead"),
        cli("explain", "--kind", "Crasher", txid),
        cli("explain", "--kind", "Crasher", txid, "--json"),
        cli("lookup", "--kind", "Crasher", txid, "--json"),
        cli("stop", "--kind", "Crasher", txid),
        cli("stop", "--kind", "Crasher", txid),
    ]
    # A broker password as well: the broker is down, the start is recorded and the error logged.
    broker_down = {"CELERY_BROKER_URL": f"redis://tracking:{CANARY}@127.0.0.1:1/0"}
    outputs += [
        cli("start", "--kind", "Counter", txid, env=broker_down),
        cli("check", env=broker_down),
        cli("stop", "--kind", "Counter", txid, env=broker_down),
    ]
    assert [r.returncode for r in outputs[-3:]] == [0, 0, 0]
    for result in outputs:
        assert CANARY not in result.stdout + result.stderr


@pytest.mark.timeout(180)
def test_demo_runs_trackers_to_completion_on_the_embedded_default(tmp_path: Path) -> None:
    import subprocess

    from tests.cli.runner import TRACKING

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKING_", "CELERY_"))}
    result = subprocess.run(
        [*TRACKING, "demo", "--count", "3", "--seconds", "60"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "summary: confirmed 3/3" in result.stdout
