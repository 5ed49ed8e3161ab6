"""`tracking.install(app)` onto an application's own Celery app, run by a real worker of that app."""

from __future__ import annotations

import os

import pytest

from tests.harness import Cluster, Stack, wait_for
from tests.integration.trackers import Counter

pytestmark = pytest.mark.stacks("postgres-redis")


def test_a_worker_of_the_user_s_own_app_runs_trackers_and_keeps_the_app_s_schedule(
    stack: Stack, txid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Cluster(stack) as cluster:
        cluster.worker("user1", app="tests.integration.userapp")
        Counter.start(txid, until=3)
        wait_for(lambda: Counter.lookup(txid) is None, what="the tracker to run to Done on the user's worker")
        # The entry leaves the registry before the task returns and Celery logs its result: the
        # log line comes a moment later (CI at 2b7fbda read the log before it was written).
        wait_for(
            lambda: "tracking.Counter" in cluster.log("user1") and "'done'" in cluster.log("user1"),
            what="the user's worker to log the tracker's task done",
        )

    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    from tests.integration import userapp

    schedule = userapp.app.conf.beat_schedule
    assert set(schedule) == {"user-housekeeping", "tracking-supervisor"}
    assert userapp.app.conf.task_default_queue == os.environ["TRACKING_QUEUE"]
    assert "userapp.housekeeping" in userapp.app.tasks and "tracking.Counter" in userapp.app.tasks
