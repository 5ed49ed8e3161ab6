"""Publishing many trackers' messages at once (``start_many``).

Up to :data:`FAN_OUT_ABOVE` entries are published as ``publish_with`` publishes one: a tracker
message each, all on one producer (acquired once from the app's pool, its connection checked
once). More are published as batch (fan-out) messages: one message to the task
``tracking/publish`` per :data:`~tracking.celery.tasks.MAX_FAN_OUT` entries of one kind, routed
as that kind's tracker task is (``TRACKING_QUEUE``, else the app's ``task_routes``), whose
argument lists each entry as the registry recorded it, ``[kind, transaction ID, epoch, task ID]``.
A worker taking it sends each entry's tracker message, the very one ``publish_with`` would have
sent (same task, arguments and task ID), all on one producer. Publishing a thousand entries then
costs the client one message instead of a thousand.

The registry stays the only recovery path. A fan-out message is acknowledged when a worker takes
it (as tracker messages are); if it is lost, or its worker dies halfway, the entries it had not
sent yet stay pending, and the supervisor publishes each of them again after the start grace. A
fan-out delivered twice sends each tracker message twice, and the claim lets only one of the two
run (the other exits as already running). A malformed fan-out message is refused whole, once,
and logged: it sends nothing.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from celery import Celery

from tracking.celery import state
from tracking.celery.config import RETRY_POLICY
from tracking.celery.process import task_name
from tracking.celery.tasks import MAX_FAN_OUT, malformed_fan_out
from tracking.client.refs import Publication, Publishable, PublishMany
from tracking.redact import redact_url
from tracking.settings import Settings

log = logging.getLogger("tracking.celery")

#: the task a fan-out message is for ("/" is in no tracker kind, so no tracker task has its name)
FAN_OUT_TASK = "tracking/publish"
#: ``start_many``'s entries are published through fan-out messages when there are more than this
FAN_OUT_ABOVE = 8


def publish_many_with(app: Celery, settings: Settings) -> PublishMany:
    """A publisher of many messages with ``app``: for each row, the message that starts
    incarnation ``row.epoch``; up to :data:`FAN_OUT_ABOVE` rows one message each, in order, more
    through fan-out messages (module docstring). All on one producer. A failure stops it there and
    is raised (the entries are recorded already; the supervisor publishes again those not
    published). Adds the fan-out task to ``app``, so that its workers run it."""
    make_fan_out_task(app)
    queue = {"queue": settings.queue} if settings.queue else {}

    def publish_many(rows: Sequence[Publishable]) -> None:
        if not rows:
            return
        with app.producer_or_acquire() as producer:
            if len(rows) <= FAN_OUT_ABOVE:
                for row in rows:
                    send(app, row, queue, producer=producer)
                return
            for chunk in fan_out_chunks(rows):
                send_fan_out(app, chunk, queue, producer=producer)

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


def fan_out_chunks(rows: Sequence[Publishable]) -> Iterator[Sequence[Publishable]]:
    """``rows`` in order, cut into runs of one kind of at most
    :data:`~tracking.celery.tasks.MAX_FAN_OUT` each: the rows of one fan-out message."""
    for _, run in itertools.groupby(rows, key=lambda row: row.kind):
        same = list(run)
        for first in range(0, len(same), MAX_FAN_OUT):
            yield same[first : first + MAX_FAN_OUT]


def send_fan_out(app: Celery, rows: Sequence[Publishable], queue: dict[str, str], **options: Any) -> None:
    """Send one fan-out message for ``rows`` (of one kind, at most
    :data:`~tracking.celery.tasks.MAX_FAN_OUT`)."""
    app.send_task(
        FAN_OUT_TASK,
        args=[[[row.kind, row.transaction_id, row.epoch, row.task_id] for row in rows]],
        # Routed as the trackers' own task is (the app's task_routes, when no TRACKING_QUEUE):
        # to the workers that run these trackers, which know their kind, and not to the default
        # queue, which may have no consumer, or only workers of another app.
        route_name=task_name(rows[0].kind),
        serializer="json",
        retry=True,
        retry_policy=RETRY_POLICY,
        **queue,
        **options,
    )


def make_fan_out_task(app: Celery) -> None:
    """Add the fan-out task to ``app`` (again and again harmlessly: the same function each time)."""
    # shared=False: a task of this app only (Celery would otherwise add it to every app).
    app.task(
        name=FAN_OUT_TASK, bind=True, acks_late=False, ignore_result=True, serializer="json", shared=False
    )(fan_out)


def fan_out(self: Any, rows: Any) -> str:
    """Send the tracker message of each entry a ``start_many`` recorded (the fan-out task)."""
    # Refused once, whole, when any row is malformed: it is acknowledged already
    # (acks_late=False), and nothing of it is sent.
    problem = malformed_fan_out(rows)
    if problem is not None:
        log.error("refused a malformed fan-out message %s: %s", self.request.id, problem)
        return "refused"
    settings = state.client_for(self.app).settings  # the app's client now (re-installs change it)
    return fan_out_rows(self.app, [Publication(*row) for row in rows], settings, self.request.id)


def fan_out_rows(app: Celery, rows: list[Publication], settings: Settings, task_id: str) -> str:
    """Send each row's tracker message, on one producer. A failure stops it there and is logged:
    the rows not sent stay pending, and the supervisor publishes them after the start grace."""
    queue = {"queue": settings.queue} if settings.queue else {}
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for row in rows:
                send(app, row, queue, producer=producer)
                sent += 1
    except Exception as exc:  # any broker failure: the registry, not this task, recovers them
        log.warning(
            "fan-out %s: %d of %d %s trackers not published yet (the supervisor publishes them "
            "after the start grace): %s",
            task_id,
            len(rows) - sent,
            len(rows),
            rows[0].kind,
            redact_url(str(exc)),
        )
        return f"sent {sent} of {len(rows)}"
    return f"sent {sent}"
