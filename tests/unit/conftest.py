"""The tracker task of a probe tracker, called directly: what a malformed message reaches."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

import tracking
import tracking.celery as glue
import tracking.worker
from tracking.celery import tasks

#: the tracker task, and the (transaction ID, epoch) of each call that reached the runtime
ProbeTask = tuple[Any, list[tuple[str, int]]]


class MessageProbe(tracking.Tracker):
    """A tracker whose task the tests call directly (nothing runs it on a worker)."""

    interval = 60.0

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        return state


@pytest.fixture
def probe_task(monkeypatch: pytest.MonkeyPatch) -> ProbeTask:
    """The tracker task on an app of its own, with the runtime replaced: what reaches it is recorded."""
    reached: list[tuple[str, int]] = []

    def run(_cls: object, txid: str, epoch: int, _task_id: object, _rt: object) -> str:
        reached.append((txid, epoch))
        return "ran"

    monkeypatch.setattr(tracking.worker, "run", run)
    monkeypatch.setattr(glue.process, "for_app", lambda _app, _hostname: None)
    app = Celery("message-probe", set_as_current=False)
    tasks.make_task(app, MessageProbe)
    return app.tasks[glue.task_name(MessageProbe.kind)], reached
