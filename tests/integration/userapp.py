"""An application's own Celery app, with its own configuration, task and beat schedule, onto which
`tracking` is installed with one call (what a Django or Flask project does)."""

from __future__ import annotations

import os

from celery import Celery

import tracking

app = Celery("userapp")
app.conf.update(
    broker_url=os.environ["CELERY_BROKER_URL"],
    task_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    task_default_queue=os.environ["TRACKING_QUEUE"],
    beat_schedule={"user-housekeeping": {"task": "userapp.housekeeping", "schedule": 3600.0}},
)
if os.environ.get("TEST_REDIS_PREFIX"):
    app.conf.broker_transport_options = {"global_keyprefix": os.environ["TEST_REDIS_PREFIX"]}


@app.task(name="userapp.housekeeping")  # type: ignore[untyped-decorator]  # Celery is unannotated
def housekeeping() -> str:
    return "swept"


tracking.install(app)
