"""Publishing many trackers' messages at once (``start_many``): one producer, acquired once from
the app's pool and its connection checked once, for the whole batch, instead of one acquisition
per message as ``send_task`` alone does. Each message is the one ``publish_with`` sends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery

from tracking.celery.config import RETRY_POLICY
from tracking.celery.tasks import task_name
from tracking.client.refs import Publishable, PublishMany
from tracking.settings import Settings


def publish_many_with(app: Celery, settings: Settings) -> PublishMany:
    """A publisher of many messages: sends the message that starts incarnation ``row.epoch`` of
    each row with ``app``, in order, on one producer. A failure stops it there and is raised (the
    entries are recorded already; the supervisor publishes again those not published)."""
    queue = {"queue": settings.queue} if settings.queue else {}

    def publish_many(rows: Sequence[Publishable]) -> None:
        if not rows:
            return
        with app.producer_or_acquire() as producer:
            for row in rows:
                send(app, row, queue, producer=producer)

    return publish_many


def send(app: Celery, row: Publishable, queue: dict[str, str], **options: Any) -> None:
    """Send the message that starts incarnation ``row.epoch`` (its task ID the incarnation's)."""
    app.send_task(
        task_name(row.kind),
        args=[row.transaction_id],
        kwargs={"epoch": row.epoch},
        task_id=row.task_id,
        serializer="json",
        retry=True,
        retry_policy=RETRY_POLICY,
        **queue,
        **options,
    )
