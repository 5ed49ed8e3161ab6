"""The tasks `tracking` adds to a Celery app: one per tracker kind, and the supervisor's, with its
beat entry.

Tracker tasks are ordinary Celery tasks named ``tracking.<kind>`` whose arguments are the
transaction ID (so Flower shows it) and the epoch of the incarnation the message is for. They are
acknowledged early, when the worker takes them: the registry, not the broker, is what keeps a
tracker alive (a message lost before the claim leaves the entry pending and the supervisor
publishes it again), so no broker ever holds a long-unacknowledged tracker message.

``start_many`` of more than a few entries publishes batch (fan-out) messages instead, to the task
``tracking/publish`` (:mod:`tracking.celery.publishing`): a worker sends each entry's tracker
message. Its argument is validated here (:func:`malformed_fan_out`): a malformed one is refused
whole, once, and logged.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from celery import Celery

from tracking import worker
from tracking.celery import process, state
from tracking.celery.process import task_name
from tracking.client import Client
from tracking.exceptions import InvalidTransactionId
from tracking.registry import MAX_BATCH
from tracking.tracker import Tracker, of_kind
from tracking.validation import transaction_id as valid_transaction_id
from tracking.worker import Batch

log = logging.getLogger("tracking.celery")

SUPERVISE_TASK = "tracking.supervise"
BEAT_ENTRY = "tracking-supervisor"
#: the largest epoch the registry can store (a signed 64-bit column)
MAX_EPOCH = 2**63 - 1
#: the most entries one fan-out message names (``start_many`` sends one per this many)
MAX_FAN_OUT = 1000
#: a Celery task ID as the registry records it (a UUID; its column holds 64 characters)
_TASK_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def make_task(app: Celery, cls: type[Tracker]) -> None:
    kind = cls.kind
    if task_name(kind) in app.tasks:
        return  # a class redefined under the same kind: the task looks the class up when it runs

    # shared=False: a task of this app only (Celery would otherwise add it to every app).
    @app.task(
        name=task_name(kind), bind=True, acks_late=False, ignore_result=True, serializer="json", shared=False
    )
    def run_tracker(self: Any, transaction_id: str, epoch: int | None = None) -> str:
        # A malformed message is refused once: it is acknowledged already (acks_late=False), and
        # handing it to the registry would only fail, or be retried, forever.
        problem = malformed(transaction_id, epoch)
        if problem is not None:
            log.error("%s: refused a malformed tracker message: %s", kind, problem)
            return "refused"
        if epoch is None:
            log.error(
                "%s %s: tracker tasks are sent by Tracker.start(), not called directly", kind, transaction_id
            )
            return "refused"
        tracker = of_kind(kind) or cls  # the class defined last under this kind (module reloads)
        wp = process.for_app(self.app, self.request.hostname)
        return worker.run(tracker, transaction_id, epoch, self.request.id, wp)

    run_tracker.__doc__ = f"Run one incarnation of the {kind} tracker."
    # Every kind gets one (a class redefined with park = True, or a batch a newer worker
    # published during a rolling deploy, must find it).
    make_batch_task(app, cls)


def make_batch_task(app: Celery, cls: type[Tracker]) -> None:
    kind = cls.kind

    @app.task(
        name=process.batch_task_name(kind),
        bind=True,
        acks_late=False,
        ignore_result=True,
        serializer="json",
        shared=False,
    )
    def run_batch(self: Any, members: Any) -> str:
        problem = malformed_batch(members)
        if problem is not None:
            log.error("%s: refused a malformed batch message: %s", kind, problem)
            return "refused"
        tracker = of_kind(kind) or cls
        wp = process.for_app(self.app, self.request.hostname)
        batch = Batch(kind, tuple((txid, epoch) for txid, epoch in members), self.request.id)
        return worker.run_batch(tracker, batch, wp)

    run_batch.__doc__ = f"Tick a batch of parked {kind} trackers."


def malformed_batch(members: object) -> str | None:
    """What is wrong with a batch message's argument, or None."""
    if not isinstance(members, list) or not 1 <= len(members) <= MAX_BATCH:
        return f"a batch must be a list of 1 to {MAX_BATCH} [transaction ID, epoch] pairs"
    for member in members:
        if not isinstance(member, list) or len(member) != 2:
            return "a batch member must be a [transaction ID, epoch] pair"
        problem = malformed(member[0], member[1])
        if problem is not None:
            return problem
        if member[1] is None:
            return f"a batch member of {member[0]!r} has no epoch"
    return None


def malformed_fan_out(rows: object) -> str | None:
    """What is wrong with a fan-out message's argument, or None: it must be a list of 1 to
    :data:`MAX_FAN_OUT` ``[kind, transaction ID, epoch, task ID]`` rows, each naming a tracker kind
    this process knows, a valid transaction ID, an epoch and a task ID."""
    shape = "[kind, transaction ID, epoch, task ID]"
    if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_FAN_OUT:
        return f"a fan-out message must be a list of 1 to {MAX_FAN_OUT} {shape} rows"
    for row in rows:
        if not isinstance(row, list) or len(row) != 4:
            return f"a fan-out row must be a {shape} list, not {short(row)}"
        kind, transaction_id, epoch, task_id = row
        if not isinstance(kind, str) or of_kind(kind) is None:
            return f"kind {short(kind)} of {short(transaction_id)} is not a tracker kind this worker knows"
        problem = malformed(transaction_id, epoch)
        if problem is not None:
            return problem
        if epoch is None:
            return f"the fan-out row of {short(transaction_id)} has no epoch"
        if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
            return f"task ID {short(task_id)} of {short(transaction_id)} is not a task ID"
    return None


def short(value: object) -> str:
    """``value``'s repr for a log line: at most 100 characters."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's 4300 digits
        return f"<{type(value).__name__} too long to show>"
    return text if len(text) <= 100 else f"{text[:97]}..."


def malformed(transaction_id: object, epoch: object) -> str | None:
    """What is wrong with a tracker message's arguments, or None (an epoch of None is left to the
    caller: it means the task was called directly)."""
    try:
        valid_transaction_id(transaction_id)
    except InvalidTransactionId as exc:
        return f"transaction ID {short(transaction_id)} is invalid ({exc})"
    if epoch is not None and (type(epoch) is not int or not 1 <= epoch <= MAX_EPOCH):
        return f"epoch {short(epoch)} of {short(transaction_id)} is not an int in 1..2**63-1"
    return None


def make_supervise_task(app: Celery) -> None:
    @app.task(name=SUPERVISE_TASK, ignore_result=True, serializer="json", shared=False)
    def supervise() -> dict[str, int]:
        return process.sweep(state.client_for(app), app)  # the app's client now (re-installs change it)


def configure(app: Celery, client: Client) -> None:
    """Add the supervisor's beat entry and the tracker modules to the app's own configuration."""
    settings = client.settings

    def add(**_kwargs: Any) -> None:
        queue = {"queue": settings.queue} if settings.queue else {}
        app.conf.beat_schedule.setdefault(
            BEAT_ENTRY,
            {
                "task": SUPERVISE_TASK,
                "schedule": settings.sweep_seconds,
                "options": {"expires": max(settings.sweep_seconds, 1.0), **queue},
            },
        )
        if settings.imports:  # the worker imports these (from its working folder) at start
            app.conf.imports = tuple(dict.fromkeys([*app.conf.imports, *settings.imports]))

    if app.configured:
        add()
    else:
        app.on_after_configure.connect(add, weak=False)
