"""Plain Celery, without `tracking`: the baseline of the lost-worker section (e.).

``celery -A bench.plainapp worker``. A long task acknowledged late and rejected (requeued) if its
worker is lost: the settings a Celery user reaches for to make a long task survive the loss of its
worker. The broker and its transport options come from ``BENCH_BROKER_URL`` and
``BENCH_TRANSPORT_OPTIONS`` (JSON); the tasks answer through ``bench.replies``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery import Celery

from bench.replies import push, worker_client

app = Celery("bench-plain", set_as_current=False)
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
    broker_transport_options=json.loads(os.environ.get("BENCH_TRANSPORT_OPTIONS") or "{}"),
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_enable_remote_control=False,
    worker_send_task_events=False,
)

LONG_TASK = "bench.long"
WHOAMI_TASK = "bench.whoami"


def _report(key: str, task: Any) -> None:
    delivery = task.request.delivery_info or {}
    push(
        key, json.dumps({"hostname": task.request.hostname, "redelivered": bool(delivery.get("redelivered"))})
    )


@app.task(name=LONG_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def long_task(self: Any, reply_key: str, seconds: float) -> None:
    """Say where it runs, then run for ``seconds`` (bounded), or until ``<reply_key>:stop`` is set."""
    _report(reply_key, self)
    deadline = time.monotonic() + min(float(seconds), 600.0)
    while time.monotonic() < deadline:
        if worker_client().exists(f"{reply_key}:stop"):
            return
        time.sleep(0.2)


@app.task(name=WHOAMI_TASK, bind=True)  # type: ignore[untyped-decorator]
def whoami(self: Any, reply_key: str) -> None:
    """Say which worker runs it: the readiness check of a worker."""
    _report(reply_key, self)
