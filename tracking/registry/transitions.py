"""The life of a registry entry, as one table of transitions.

An entry is ``pending``, ``running``, ``parked``, ``failed`` or ``dead``; *gone* is the absence of
its row (deregistered). Every write the registry makes to an entry is one of the transitions below,
and takes its precondition from :data:`RULES` through :func:`guard`, so that each rule is written
once, here, and checked by the database in the statement that makes the change:

==========  ========================  =========================================  =====================
transition  from                      the database checks                        to
==========  ========================  =========================================  =====================
start       gone, dead                the unique key; dead is still dead         pending (a new life)
claim       pending                   the message's epoch; the claimer's lease   running
                                      is live by the database clock
checkpoint  running                   the incarnation's epoch                    running
park        running                   epoch; no stop recorded; no mail waiting   parked
finish      running                   epoch                                      gone
exit        running                   epoch                                      :func:`plan_exit`
hand off    running                   epoch                                      pending (epoch + 1);
                                                                                 gone if a normal stop
                                                                                 is recorded
rescue      running                   the owner has no live lease                :func:`plan_exit`
wake        parked, failed            due                                        pending (parked:
                                                                                 epoch + 1)
hurry       failed                    the epoch as read (an operator's "restart   pending
                                      now": the backoff is skipped)
republish   pending                   due                                        pending, same epoch,
                                                                                 a longer grace
stop        running                   a normal stop is never overwritten         running, stop recorded
remove      pending, parked, failed,  the entry as read                          gone; an abnormal stop:
            dead                                                                 :func:`plan_exit`
==========  ========================  =========================================  =====================

The rules every transition keeps:

* **Fencing.** An epoch is never reused for an ID: every new incarnation is ``epoch + 1``, and a
  new life starts above every epoch the ID had before (:func:`first_epoch`), across finishes.
* **A normal stop wins.** Once ``stop("normal")`` or ``stop("shutdown")`` is recorded on a running
  entry, every way its incarnation can end (a crash, a ``Done`` of a permanent tracker, a handoff, a
  lost worker) deregisters it: no new incarnation of that life is ever made.
* **Claims need a live lease**, checked in the claim's own statement; an entry running under a
  worker without one is rescued by the next sweep (:func:`orphan_owners`).
* **A lost worker is not a crash loop**: its trackers restart at once, without the backoff; the
  loss still counts toward restart intensity.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tracking.models import Entry, Status, WorkerStatus, events, token_floor, trackers, workers
from tracking.policy import Action, Decision, RestartPolicy, decide
from tracking.registry.core import db_now, greatest, later
from tracking.settings import Settings
from tracking.validation import storable_text

#: stop reasons that deregister, whatever else happens to the running incarnation meanwhile
WINNING_STOPS = frozenset({"normal", "shutdown"})

#: how many times an unclaimed incarnation is published again one start grace apart before the
#: waits begin to double: a message can be swallowed by a worker that is frozen with it (RabbitMQ
#: hands it to a paused consumer, which holds it until the broker's heartbeat finds it dead), so
#: the first republishes must come quickly; the doubling bounds what an entry costs over hours
REPUBLISH_STEADY = 10
#: the longest a pending incarnation waits, in start grace periods, before it is published again
REPUBLISH_MAX_STEP = 5


class Op(enum.StrEnum):
    START = "start"
    CLAIM = "claim"
    CHECKPOINT = "checkpoint"
    PARK = "park"
    FINISH = "finish"
    EXIT = "exit"
    HAND_OFF = "hand off"
    RESCUE = "rescue"
    WAKE = "wake"
    HURRY = "hurry"
    REPUBLISH = "republish"
    STOP = "stop"
    REMOVE = "remove"


@dataclasses.dataclass(frozen=True)
class Rule:
    """The precondition of one transition, as the database checks it."""

    #: the statuses the entry may have
    sources: frozenset[Status]
    #: the write names the incarnation's epoch (a superseded one changes nothing)
    fenced: bool = False
    #: the writer's lease must be live, by the database clock, in the same statement
    live_lease: bool = False
    #: refused while a winning stop is recorded, or while mail waits
    idle: bool = False
    #: only once the entry's ``due_at`` has passed
    due: bool = False


_RUNNING = frozenset({Status.RUNNING})
RULES: dict[Op, Rule] = {
    Op.START: Rule(frozenset({Status.DEAD})),
    Op.CLAIM: Rule(frozenset({Status.PENDING}), fenced=True, live_lease=True),
    Op.CHECKPOINT: Rule(_RUNNING, fenced=True),
    Op.PARK: Rule(_RUNNING, fenced=True, idle=True),
    Op.FINISH: Rule(_RUNNING, fenced=True),
    Op.EXIT: Rule(_RUNNING, fenced=True),
    Op.HAND_OFF: Rule(_RUNNING, fenced=True),
    Op.RESCUE: Rule(_RUNNING),
    Op.WAKE: Rule(frozenset({Status.PARKED, Status.FAILED}), due=True),
    Op.HURRY: Rule(frozenset({Status.FAILED}), fenced=True),
    Op.REPUBLISH: Rule(frozenset({Status.PENDING}), due=True),
    Op.STOP: Rule(_RUNNING),
    Op.REMOVE: Rule(frozenset({Status.PENDING, Status.PARKED, Status.FAILED, Status.DEAD})),
}


def guard(
    op: Op,
    *,
    epoch: Any = None,
    fence: sa.ColumnElement[bool] | None = None,
    worker_id: Any = None,
    settings: Settings | None = None,
) -> list[sa.ColumnElement[bool]]:
    """The WHERE conditions of transition ``op`` (besides which entry it is). A fenced transition
    names the incarnation's ``epoch``, or gives its own ``fence`` condition (a batch names an
    epoch per entry). ``epoch`` and ``worker_id`` may be bound parameters."""
    rule = RULES[op]
    conditions: list[sa.ColumnElement[bool]] = [
        trackers.c.status.in_(sorted(rule.sources))
        if len(rule.sources) > 1
        else trackers.c.status == next(iter(rule.sources))
    ]
    if rule.fenced:
        if fence is None and epoch is None:
            raise ValueError(f"{op} is fenced: give the incarnation's epoch")
        conditions.append(fence if fence is not None else trackers.c.epoch == epoch)
    if rule.live_lease:
        if worker_id is None or settings is None:
            raise ValueError(f"{op} needs the writer's lease: give worker_id and settings")
        conditions.append(live_lease(worker_id, settings))
    if rule.idle:
        conditions.append(trackers.c.stop_reason.is_(None))
        conditions.append(trackers.c.last_message_id <= trackers.c.handled_message_id)
    if rule.due:
        conditions.append(trackers.c.due_at <= db_now())
    return conditions


def live_lease(worker_id: Any, settings: Settings) -> sa.ColumnElement[bool]:
    """The worker process ``worker_id`` holds a live lease, by the database clock."""
    return sa.exists().where(
        workers.c.id == worker_id,
        workers.c.status == WorkerStatus.ALIVE.value,
        workers.c.heartbeat_at >= db_now(-settings.lease_seconds),
    )


def orphan_owners() -> sa.Select[tuple[str]]:
    """The worker IDs that own running entries but hold no live lease row (lost, stopped or
    missing): whatever they own is rescued. Leases that expired are marked lost first
    (``mark_lost_workers``), in the same sweep.

    Only running entries have a worker (every other transition clears it), so the owners are the
    distinct worker IDs of the table, read with a loose index scan (a recursive walk of the
    ``worker_id`` index, one probe per owner): its cost follows the number of worker processes, not
    of entries.
    """
    walk = sa.select(sa.func.min(trackers.c.worker_id).label("owner")).cte("owners", recursive=True)
    after = sa.select(sa.func.min(trackers.c.worker_id)).where(trackers.c.worker_id > walk.c.owner)
    walk = walk.union_all(sa.select(after.scalar_subquery()).where(walk.c.owner.is_not(None)))
    alive = sa.exists().where(workers.c.id == walk.c.owner, workers.c.status == WorkerStatus.ALIVE.value)
    return sa.select(walk.c.owner).where(walk.c.owner.is_not(None), ~alive)


# -- new incarnations and new lives ---------------------------------------------------------------


def new_task_id() -> str:
    return str(uuid.uuid4())


def fresh_incarnation(settings: Settings) -> dict[str, Any]:
    """Column values that make a row a new, not yet claimed incarnation (epoch + 1)."""
    return {
        "status": Status.PENDING.value,
        "epoch": trackers.c.epoch + 1,
        "task_id": new_task_id(),
        "worker": None,
        "worker_id": None,
        "claimed_at": None,
        "stop_reason": None,
        "due_at": db_now(settings.start_grace_seconds),
        "tick_at": None,
        "republished": 0,
    }


def claimed(worker: Any, worker_id: Any, policy: RestartPolicy | Any) -> dict[str, Any]:
    """Column values of a claimed entry: running under the claimer, with the policy its code
    declares now (a deploy that changed it takes effect at the next claim). Each value may also
    be a bound parameter (a statement built once, the policy then in its JSON form)."""
    return {
        "status": Status.RUNNING.value,
        "worker": worker,
        "worker_id": worker_id,
        "claimed_at": db_now(),
        "due_at": None,
        "republished": 0,
        "policy": policy.to_json() if isinstance(policy, RestartPolicy) else policy,
    }


def next_tick(interval: float) -> Any:
    """The next tick of a running entry that has just ticked (woken from its park), at a fixed
    rate: ``interval`` after the tick was due (its ``tick_at``), so that a late tick does not push
    the later ones back; if that is past already (the tick fell a whole interval behind), an
    interval from now: a missed tick is not caught up."""
    scheduled = later(sa.func.coalesce(trackers.c.tick_at, db_now()), interval)
    return sa.case((scheduled > db_now(), scheduled), else_=db_now(interval))


def first_epoch(kind: Any, transaction_id: Any) -> sa.ColumnElement[int]:
    """The epoch of a new life of (kind, transaction ID): above every epoch it had before.

    An entry that finished leaves no row, but its events keep its epochs (the exit is recorded
    under the last one); events pruned by retention raise the floor first.
    """
    floor = sa.select(sa.func.coalesce(sa.func.max(token_floor.c.epoch), 0)).scalar_subquery()
    own = (
        sa.select(sa.func.coalesce(sa.func.max(events.c.epoch), 0))
        .where(events.c.kind == kind, events.c.transaction_id == transaction_id)
        .scalar_subquery()
    )
    return greatest(floor, own) + 1


# -- exits ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Exit:
    """What an exit does to one entry: the decision and the events to record."""

    row: Entry
    decision: Decision
    #: ``(event, detail)`` recorded under the exiting epoch
    events: tuple[tuple[str, str | None], ...]
    last_error: str | None


def plan_exit(
    row: Entry,
    now: datetime,
    event: str,
    detail: str | None,
    *,
    normal: bool = False,
    lost: bool = False,
) -> Exit:
    """Decide what the exit of running entry ``row`` at ``now`` (the database clock) does.

    ``normal``: a ``Done`` of a permanent tracker; ``lost``: its worker lost its lease. A winning
    stop recorded on the entry deregisters it, whatever the exit. Writes nothing.
    """
    detail = storable_text(detail) if detail is not None else None
    stop = row.stop_reason
    if stop in WINNING_STOPS:
        why = f"stop({stop!r}) recorded; the incarnation ended with {event}"
        return Exit(row, Decision(Action.DEREGISTER), (("stopped", why),), row.last_error)
    claimed = row.claimed_at
    decision = decide(
        RestartPolicy.from_json(row.policy),
        normal=normal,
        lost=lost,
        now=now,
        restart_times=list(row.restart_times),
        backoff_step=row.backoff_step,
        ran_seconds=(now - claimed).total_seconds() if claimed else None,
    )
    recorded: tuple[tuple[str, str | None], ...] = ((event, detail),)
    if decision.action is Action.DEAD:
        recorded += (("dead", RestartPolicy.from_json(row.policy).why_dead()),)
    return Exit(row, decision, recorded, row.last_error if normal else detail)


def republish_grace(settings: Settings, republished: int) -> float:
    """The grace before a pending incarnation published ``republished`` times is published again:
    one start grace for the first ``REPUBLISH_STEADY`` times, then doubling, up to
    ``2 ** REPUBLISH_MAX_STEP`` start grace periods, so an entry no worker takes costs a bounded
    trickle of broker messages."""
    step = min(max(0, republished - REPUBLISH_STEADY), REPUBLISH_MAX_STEP)
    return float(settings.start_grace_seconds * 2**step)
