"""``start`` inside a Django atomic block, with a real worker, on SQLite and PostgreSQL: a
rolled-back block leaves no entry and no message, a committed one runs the tracker, and nothing
waits for SQLite's write lock, which the block holds after its INSERT.

The Django project runs in a subprocess (``django_atomic.py``): Django is set up once per
process, and this suite's other Django tests set it up with the example project's settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROOT, Cluster, observe, running, wait_for
from tests.integration.trackers import Counter

pytestmark = [pytest.mark.stacks("sqlite-embedded", "postgres-redis"), pytest.mark.cluster(workers=("w1",))]


def run_project(cluster: Cluster, rolled_back: str, committed: str, other: Path) -> dict[str, Any]:
    env = {**os.environ, **cluster.stack.web_env(), "PYTHONPATH": str(ROOT)}
    env.pop("TRACKING_DATABASE_URL")  # the registry is the project's own database
    script = [sys.executable, "-m", "tests.contrib.django_atomic"]
    done = subprocess.run(
        [*script, cluster.stack.database_url, rolled_back, committed, str(other)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_start_in_an_atomic_block_takes_effect_only_if_the_block_commits(
    cluster: Cluster, txid: str, tmp_path: Path
) -> None:
    rolled_back, committed = f"{txid}_rolled_back", f"{txid}_committed"

    result = run_project(cluster, rolled_back, committed, tmp_path / "orders.sqlite3")

    assert result["orders"] == [committed]
    assert result["rolled_back"] == {"on_commit": True, "task_id": "", "already_started": False}
    assert result["committed"]["on_commit"] is True
    assert result["entry_before_commit"] is False and result["entry_after_commit"] is True
    assert result["published_before_commit"] == [] and result["published"] == [committed]
    wait_for(lambda: running(Counter, committed), timeout=30, what="the committed order's tracker to run")
    assert observe(lambda: Counter.lookup(rolled_back) is not None, seconds=1.0) is None
    # With blocks open on two databases, the one that rolled back (the order's) wins.
    assert result["other_db_started"] is False
    # A start that fails after the commit: logged by Django, the request and its hooks go on.
    assert result["failing_raised"] is None and result["failing_hooks"] == ["receipt sent"]
