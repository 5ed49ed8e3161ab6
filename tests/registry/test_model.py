"""The registry's transitions, model-checked: a Hypothesis state machine drives random sequences of
the real registry operations (and the supervisor's sweep) on SQLite and PostgreSQL, and checks the
registry's invariants after every step.

Three transaction IDs of one kind (all started first, each under a drawn restart policy), two
worker processes. The rules are what the runtime, the supervisor and the users do: ``start`` (also
afresh after a finish), ``claim`` (the entry's own message, a duplicate, or a stale one of an older
incarnation or life, by a worker whose lease is live or not), ``tick`` (ends in a checkpoint or a
park), ``exit`` (a crash, ``Done`` of a transient or permanent tracker, or honouring a stop),
``stop`` (normal, shutdown, abnormal), ``hand_off``, ``claim_batch`` and ``park_batch`` (a batch
of parked trackers claimed and parked again together, some of its entries superseded or with mail
or a stop waiting), ``send`` (a cast or call) and
``handle_message``, ``due_time_passes`` (a grace, backoff or park runs out), ``lease_lapses`` (a
worker's lease expires, or its row vanishes), ``renew`` (a worker declared lost registers again
under a new ID, as the runtime does) and ``sweep`` by one or two supervisors at once. Every write
may come from the entry's running incarnation or from a superseded one (``who``: 0 is the running
one). In a printed failing sequence, ``i`` is a rank, not an ID: the entries the rule applies to
come first (the pending ones for a claim, the running ones for a write, ...).

The invariants, each named by the tag its failures carry:

``fencing``   a write by any (row id, epoch) but the entry's running incarnation is refused
              (``Fenced``, or nothing returned) and changes nothing in the database
``token``     an ID's epoch only grows over its whole history, across finishes and fresh starts
``stop``      after a recorded normal/shutdown stop no incarnation of that life starts again: the
              entry is gone once the running one exits, however it exits (crash, permanent Done,
              handoff, lost worker)
``lease``     a claim by a worker whose lease is not live (expired by the database clock, declared
              lost, row missing) is refused
``stranded``  every entry is pending/failed/parked with a due time, or running; one sweep after
              every lease expired leaves none running (checked by a rule and at the end of each run)
``mailbox``   each message is handled once, in order
``loss``      a worker loss restarts at once (``pending``, backoff unchanged), however many in a row
``model``     anything else the model predicts (what the contract says each operation does)

The model predicts each operation's outcome from the contract (docs: SPEC "Semantics"), compares it
with the database after the step and then takes the database's values as its own, so that with
``REGISTRY_MODEL_LENIENT=tag,tag`` the tagged violations are only noted and the search goes on for
the others (a way to see every defect of a broken registry, one tag at a time).

Time is the database's: nothing sleeps. Leases, grace periods and backoffs are long (600 s, 300 s),
and the rules move the recorded times into the past by SQL, so that real time never expires
anything by itself and each outcome is determined. For the same reason the restart window
(``max_seconds``) is an hour: no incarnation runs long enough to reset its backoff.

Profiles: CI runs 100 examples of up to 40 steps per database (15 to 30 s each on two cores);
``REGISTRY_MODEL_EXAMPLES=2000`` (and optionally ``REGISTRY_MODEL_STEPS``, default 60 then) runs
the long one, with no per-test timeout:

    REGISTRY_MODEL_EXAMPLES=2000 .venv/bin/python -m pytest tests/registry/test_model.py

(not ``TRACKING_*`` variables: the root conftest clears those). The summary at the end of the
session counts the examples, steps and transitions each database ran.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, note
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.harness import all_at_once
from tests.registry.conftest import MODEL_RUNS
from tracking import registry, supervisor
from tracking.client import Publishable
from tracking.exceptions import Fenced, NotFound
from tracking.models import messages, trackers, workers
from tracking.policy import Restart, RestartPolicy
from tracking.settings import Settings

KIND = "model"
IDS = 3
PROCESSES = 2
LEASE_SECONDS = 600.0

EXAMPLES = int(os.environ.get("REGISTRY_MODEL_EXAMPLES", "0") or 0)
LONG = EXAMPLES > 0
PROFILE = hypothesis_settings(
    max_examples=EXAMPLES or 100,
    stateful_step_count=int(os.environ.get("REGISTRY_MODEL_STEPS", "0") or 0) or (60 if LONG else 40),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
LENIENT = frozenset(t.strip() for t in os.environ.get("REGISTRY_MODEL_LENIENT", "").split(",") if t.strip())


def _policy(restart: Restart, max_restarts: int) -> RestartPolicy:
    return RestartPolicy(
        restart=restart, max_restarts=max_restarts, max_seconds=3600, backoff=300, backoff_max=600
    )


POLICIES = {
    "transient": _policy(Restart.TRANSIENT, 1000),
    "permanent": _policy(Restart.PERMANENT, 1000),
    "temporary": _policy(Restart.TEMPORARY, 1000),
    # dead at its second abnormal exit: exercises "dead", and starting afresh after it
    "fragile": _policy(Restart.TRANSIENT, 1),
}
WINNING_STOPS = ("normal", "shutdown")

#: a rule's ``i`` ranks the entries, those the rule applies to first (pending ones for a claim,
#: running ones for a write, ...): 0, the likeliest, is the first of them
ID = st.one_of(st.just(0), st.integers(0, IDS - 1))
PROCESS = st.integers(0, PROCESSES - 1)
#: who writes (or which message is delivered): half the time 0, the incarnation the model holds
#: current; otherwise n > 0 picks one of all the incarnations the ID ever had (current included)
WHO = st.one_of(st.just(0), st.integers(1, 12))


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()


@dataclasses.dataclass
class Entry:
    """What the model holds true of one transaction ID."""

    txid: str
    status: str | None = None  # None: no entry
    row_id: int | None = None
    epoch: int = 0
    worker_id: str | None = None
    stop_reason: str | None = None
    due: bool = False
    #: due for a lease period: a sweep wakes it (workers' wakers wake it once due)
    overdue: bool = False
    state: Any = None
    backoff_step: int = 0
    policy: RestartPolicy = POLICIES["transient"]
    #: restarts decided by the policy in this life (what intensity counts)
    restarts: int = 0
    #: a normal/shutdown stop was recorded for the running incarnation
    normal_stop: bool = False
    #: queued messages, oldest first, and those handled in this life
    queue: list[int] = dataclasses.field(default_factory=list)
    handled: list[int] = dataclasses.field(default_factory=list)
    #: the highest epoch the ID ever had, and every (row id, epoch) it ever had
    max_epoch: int = 0
    seen: list[tuple[int, int]] = dataclasses.field(default_factory=list)

    def current(self) -> tuple[int, int] | None:
        if self.status is None or self.row_id is None:
            return None
        return (self.row_id, self.epoch)

    def runs(self, incarnation: tuple[int, int]) -> bool:
        return self.status == "running" and incarnation == self.current()


def _running(e: Entry) -> bool:
    return e.status == "running"


@dataclasses.dataclass(frozen=True)
class Want:
    """An entry as an operation must leave it (checked after the step)."""

    why: str
    status: str | None  # None: gone
    epoch: str = "same"  # "same" incarnation, a "new" one, or "any"
    new_life: bool = False
    worker_id: str | None = None
    due: bool | None = None
    state: Any = KEEP
    backoff_step: int | None = None


@dataclasses.dataclass
class Lease:
    alive: bool = True  # the row is there with status alive
    expired: bool = False  # its heartbeat is older than the lease (moved back by SQL)
    deleted: bool = False  # the row was deleted behind the supervisor's back

    def live(self) -> bool:
        return self.alive and not self.expired


@dataclasses.dataclass(frozen=True)
class Config:
    settings: Settings
    tables: tuple[str, ...]
    counts: Counter[str]


def SEEN(machine: RegistryModel) -> bool:
    """Some entry was started: there are incarnations to write, deliver, stop."""
    return any(e.seen for e in machine.entries)


class RegistryModel(RuleBasedStateMachine):
    config: ClassVar[Config]

    def __init__(self) -> None:
        super().__init__()
        self.s = self.config.settings
        self.counts = self.config.counts
        self.counts["examples"] += 1
        self._wipe()
        run = uuid.uuid4().hex[:8]
        self.entries = [Entry(f"txn-{run}-{i}") for i in range(IDS)]
        self.leases: dict[str, Lease] = {}
        self.processes = [self._register(w) for w in range(PROCESSES)]
        self.wants: dict[int, Want] = {}
        self.diverged = False  # a violation was tolerated (REGISTRY_MODEL_LENIENT) in this step
        self.n = 0

    # -- database access ---------------------------------------------------------------------------

    @staticmethod
    def _read_rows(settings: Settings, stmt: Any) -> list[dict[str, Any]]:
        with registry.engine(settings).connect() as conn:
            conn = conn.execution_options(tracking_write=False)
            with conn.begin():
                return [dict(m) for m in conn.execute(stmt).mappings()]

    def _sql(self, stmt: Any) -> None:
        with registry.engine(self.s).begin() as conn:
            conn.execute(stmt)

    def _wipe(self) -> None:
        with registry.engine(self.s).begin() as conn:
            for name in self.config.tables:
                conn.execute(sa.text(f'DELETE FROM "{name}"'))

    def _entries(self) -> dict[str, dict[str, Any]]:
        stmt = sa.select(
            trackers,
            (trackers.c.due_at <= registry.db_now()).label("is_due"),
            (trackers.c.due_at <= registry.db_now(-LEASE_SECONDS)).label("is_overdue"),
        ).where(trackers.c.kind == KIND)
        return {r["transaction_id"]: r for r in self._read_rows(self.s, stmt)}

    def _snapshot(self, e: Entry) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rows = self._read_rows(
            self.s, sa.select(trackers).where(trackers.c.kind == KIND, trackers.c.transaction_id == e.txid)
        )
        mail = self._read_rows(
            self.s,
            sa.select(messages)
            .where(messages.c.kind == KIND, messages.c.transaction_id == e.txid)
            .order_by(messages.c.id),
        )
        return rows, mail

    def _register(self, w: int) -> str:
        worker_id = f"model-{w}/{uuid.uuid4().hex[:12]}"
        registry.register_worker(self.s, worker_id, f"w{w}@model", 1000 + w)
        self.leases[worker_id] = Lease()
        return worker_id

    # -- the model's bookkeeping -------------------------------------------------------------------

    def violation(self, why: str, message: str) -> None:
        if why in LENIENT:
            self.diverged = True
            self.counts[f"tolerated {why}"] += 1
            note(f"tolerated [{why}] {message}")
            return
        raise AssertionError(f"[{why}] {message}")

    def _state(self) -> dict[str, int]:
        self.n += 1
        return {"n": self.n}

    def target(self, e: Entry, who: int) -> tuple[int, int] | None:
        if who == 0:
            return e.current() or (e.seen[-1] if e.seen else None)
        return e.seen[(who - 1) % len(e.seen)] if e.seen else None

    def unchanged(self, e: Entry, why: str = "model") -> Want:
        return Want(
            why, e.status, worker_id=e.worker_id, due=e.due, state=e.state, backoff_step=e.backoff_step
        )

    def rank(self, i: int, prefer: Callable[[Entry], bool]) -> int:
        """The entry of rank ``i`` when those that ``prefer`` come first."""
        return sorted(range(IDS), key=lambda k: (not prefer(self.entries[k]), k))[i]

    def expect(self, i: int, want: Want) -> None:
        self.wants[i] = want

    def policy_exit(self, e: Entry, why: str, *, normal: bool = False, lost: bool = False) -> Want:
        """The entry after its running incarnation exits abnormally (or, ``normal``, a permanent
        tracker's Done), by its restart policy: dead, or restarted under a new epoch."""
        policy = e.policy
        if (not normal and policy.restart is Restart.TEMPORARY) or e.restarts >= policy.max_restarts:
            return Want(why, "dead", state=KEEP)
        e.restarts += 1
        if lost:  # a lost worker: at once, the backoff left as it was
            return Want(why, "pending", epoch="new", due=False, backoff_step=e.backoff_step)
        return Want(
            why,
            "pending" if e.backoff_step == 0 else "failed",
            epoch="new",
            due=False,
            backoff_step=e.backoff_step + 1,
        )

    def refused(
        self, e: Entry, why: str, what: str, write: Callable[[], Any], *, quiet: bool = False
    ) -> None:
        """``write``, by an incarnation that does not hold the entry, must be refused: Fenced (or,
        ``quiet``, nothing returned) and nothing changed."""
        before = self._snapshot(e)
        try:
            result = write()
        except Fenced:
            pass
        else:
            if not (quiet and not result):
                self.violation(why, f"{e.txid}: {what} was accepted (returned {result!r}) {self._brief(e)}")
        if self._snapshot(e) != before:
            self.violation(why, f"{e.txid}: the refused {what} changed the entry")
        self.counts["refused writes"] += 1
        self.expect(self.entries.index(e), self.unchanged(e, why))

    def _brief(self, e: Entry) -> str:
        return f"(model: {e.status} row {e.row_id} epoch {e.epoch}, worker {e.worker_id})"

    # -- operations ----------------------------------------------------------------------------------

    @initialize(policies=st.lists(st.sampled_from(sorted(POLICIES)), min_size=IDS, max_size=IDS))
    def start_every_id(self, policies: list[str]) -> None:
        for i, policy in enumerate(policies):
            self.start(i, policy)
            self.registry_matches_the_model()

    @rule(i=ID, policy=st.sampled_from(sorted(POLICIES)))
    def start(self, i: int, policy: str) -> None:
        i = self.rank(i, lambda e: e.status in (None, "dead"))
        e = self.entries[i]
        fresh = e.status in (None, "dead")
        row, created = registry.start(self.s, KIND, e.txid, {"i": i}, POLICIES[policy])
        if created != fresh:
            self.violation("model", f"{e.txid}: start created={created} {self._brief(e)}")
        if not fresh:
            if (row.id, row.epoch) != e.current():
                self.violation("model", f"{e.txid}: start returned {row.id}/{row.epoch} {self._brief(e)}")
            self.expect(i, self.unchanged(e))
            return
        if row.epoch <= e.max_epoch:
            self.violation(
                "token",
                f"{e.txid}: started afresh under epoch {row.epoch}, but the ID had epoch {e.max_epoch}",
            )
        self.expect(
            i, Want("model", "pending", epoch="new", new_life=e.status is None, due=False, state=None)
        )
        e.policy, e.restarts, e.normal_stop, e.queue, e.handled = POLICIES[policy], 0, False, [], []
        e.backoff_step = 0

    @precondition(SEEN)
    @rule(i=ID, w=st.one_of(st.just(0), PROCESS), which=WHO)
    def claim(self, i: int, w: int, which: int) -> None:
        """A tracker message reaches worker process ``w``: the entry's own (``which`` 0, perhaps a
        duplicate), or one for an older incarnation or life."""
        i = self.rank(i, lambda e: e.status == "pending")
        w = sorted(range(PROCESSES), key=lambda k: (not self.leases[self.processes[k]].live(), k))[w]
        e = self.entries[i]
        if not e.seen:
            return
        epoch = e.epoch if which == 0 else e.seen[(which - 1) % len(e.seen)][1]
        worker_id = self.processes[w]
        lease = self.leases[worker_id]
        ours = e.status == "pending" and epoch == e.epoch
        before = self._snapshot(e)
        try:
            got = registry.claim(
                self.s, KIND, e.txid, epoch, worker=f"w{w}@model", worker_id=worker_id, policy=e.policy
            )
        except Fenced:
            got = None
        if ours and lease.live():
            if got is None:
                self.violation("model", f"{e.txid}: claim of epoch {epoch} by a live worker refused")
            self.counts["claims"] += 1
            self.expect(
                i, Want("model", "running", worker_id=worker_id, state=e.state, backoff_step=e.backoff_step)
            )
            return
        why = "lease" if ours else "fencing"
        if got is not None:
            self.violation(
                why,
                f"{e.txid}: claim of epoch {epoch} by {worker_id} accepted {self._brief(e)}, lease {lease}",
            )
        elif self._snapshot(e) != before:
            self.violation(why, f"{e.txid}: a refused claim changed the entry")
        self.expect(i, self.unchanged(e, why))

    @precondition(SEEN)
    @rule(i=ID, who=WHO, then=st.sampled_from(["checkpoint", "park", "park until due"]))
    def tick(self, i: int, who: int, then: str) -> None:
        """An incarnation ends a tick: it checkpoints its state, or parks until its next tick (600 s
        on, or due at once)."""
        i = self.rank(i, _running)
        e = self.entries[i]
        target, state = self.target(e, who), self._state()
        if target is None:
            return
        if then == "checkpoint":
            self._checkpoint(i, target, state)
        else:
            self._park(i, target, state, 600.0 if then == "park" else 0.0)

    def _checkpoint(self, i: int, target: tuple[int, int], state: dict[str, int]) -> None:
        e = self.entries[i]
        if not e.runs(target):
            self.refused(
                e, "fencing", f"checkpoint by {target}", lambda: registry.checkpoint(self.s, *target, state)
            )
            return
        try:
            registry.checkpoint(self.s, *target, state)
        except Fenced:
            self.violation("model", f"{e.txid}: checkpoint by the running incarnation {target} fenced")
        self.expect(i, dataclasses.replace(self.unchanged(e), state=state))

    def _park(self, i: int, target: tuple[int, int], state: dict[str, int], wait: float) -> None:
        e = self.entries[i]
        if not e.runs(target):
            self.refused(
                e,
                "fencing",
                f"park by {target}",
                lambda: registry.park(self.s, *target, state, wait),
                quiet=True,
            )
            return
        may = e.stop_reason is None and not e.queue
        try:
            parked = registry.park(self.s, *target, state, wait)
        except Fenced:
            self.violation("model", f"{e.txid}: park by the running incarnation {target} fenced")
            parked = False
        if parked != may:
            why = "stop" if e.normal_stop else "mailbox" if e.queue else "model"
            self.violation(why, f"{e.txid}: park returned {parked} (stop {e.stop_reason!r}, mail {e.queue})")
        if may:
            self.counts["parks"] += 1
            self.expect(i, Want("model", "parked", due=wait == 0, state=state, backoff_step=e.backoff_step))
        else:
            self.expect(i, self.unchanged(e, "stop" if e.normal_stop else "model"))

    def _exit(
        self, i: int, who: int, what: str, write: Callable[[tuple[int, int]], Any], after: Want
    ) -> None:
        e = self.entries[i]
        target = self.target(e, who)
        if target is None:
            return
        if not e.runs(target):
            self.refused(e, "fencing", f"{what} by {target}", lambda: write(target))
            return
        try:
            write(target)
        except Fenced:
            self.violation("model", f"{e.txid}: {what} by the running incarnation {target} fenced")
        self.expect(i, after)

    def _after_exit(self, i: int, who: int, *, deregister: bool = False, normal: bool = False) -> Want:
        """The entry after incarnation ``who`` exits: unchanged unless it is the running one; then
        gone (a winning stop was recorded, or ``deregister``), or as its restart policy says."""
        e = self.entries[i]
        target = self.target(e, who)
        if target is None or not e.runs(target):
            return self.unchanged(e)
        if e.normal_stop:
            return Want("stop", None)
        if deregister:
            return Want("model", None)
        return self.policy_exit(e, "model", normal=normal)

    @precondition(SEEN)
    @rule(i=ID, who=WHO, how=st.sampled_from(["crash", "Done", "stopped"]))
    def exit(self, i: int, who: int, how: str) -> None:
        """An incarnation exits: its tick crashed, it raised Done (a permanent tracker is restarted,
        the others deregistered), or it honours the stop it was asked for (a superseded incarnation
        believes it was stopped normally)."""
        i = self.rank(i, _running)
        e = self.entries[i]
        target = self.target(e, who)
        if target is None:
            return
        if how == "crash":
            self._exit(
                i,
                who,
                "crash",
                lambda t: registry.exit_abnormally(self.s, *t, "crashed", "RuntimeError: boom"),
                self._after_exit(i, who),
            )
        elif how == "Done" and e.policy.restart is Restart.PERMANENT:
            self._exit(
                i,
                who,
                "Done",
                lambda t: registry.exit_abnormally(self.s, *t, "done", None, normal=True),
                self._after_exit(i, who, normal=True),
            )
        elif how == "Done":
            self._exit(
                i,
                who,
                "Done",
                lambda t: registry.exit_normally(self.s, *t, "done", None),
                self._after_exit(i, who, deregister=True),
            )
        else:
            self._honour_stop(i, who, target)

    @precondition(SEEN)
    @rule(i=ID, reason=st.sampled_from(["normal", "shutdown", "boom"]))
    def stop(self, i: int, reason: str) -> None:
        i = self.rank(i, _running)
        e = self.entries[i]
        winning = reason in WINNING_STOPS
        try:
            what, _row = registry.request_stop(self.s, KIND, e.txid, reason)
        except NotFound:
            if e.status is not None:
                self.violation("model", f"{e.txid}: stop raised NotFound {self._brief(e)}")
            self.expect(i, self.unchanged(e))
            return
        if e.status is None:
            self.violation("model", f"{e.txid}: stop of no entry returned {what!r}")
            self.expect(i, self.unchanged(e))
            return
        if e.status == "running":
            self.counts["stops of running trackers"] += 1
            if what not in ("requested", "unchanged"):
                self.violation("model", f"{e.txid}: stop of a running tracker returned {what!r}")
            self.expect(i, self.unchanged(e, "stop" if e.normal_stop else "model"))
            e.normal_stop = e.normal_stop or winning
        elif e.status == "dead" or winning:
            if what != "removed":
                self.violation(
                    "model", f"{e.txid}: stop({reason!r}) of a {e.status} tracker returned {what!r}"
                )
            self.expect(i, Want("model", None))
        elif e.status == "failed":
            self.expect(i, self.unchanged(e))
        else:  # an abnormal stop of a pending or parked tracker: its restart policy applies
            self.expect(i, self.policy_exit(e, "model"))

    @rule(i=ID)
    def restart_now(self, i: int) -> None:
        """An operator's "restart now": a failed entry is pending at once (same epoch, its backoff
        skipped); any other entry is left as it is."""
        i = self.rank(i, lambda e: e.status == "failed")
        e = self.entries[i]
        try:
            row = registry.hurry(self.s, KIND, e.txid)
        except NotFound:
            if e.status is not None:
                self.violation("model", f"{e.txid}: restart now raised NotFound {self._brief(e)}")
            self.expect(i, self.unchanged(e))
            return
        if e.status != "failed":
            if row is not None:
                self.violation("model", f"{e.txid}: restart now of a {e.status} entry changed it")
            self.expect(i, self.unchanged(e))
            return
        self.counts["restarts now"] += 1
        if row is None or row.status != "pending" or (row.id, row.epoch) != e.current():
            self.violation("model", f"{e.txid}: restart now of a failed entry returned {row}")
        self.expect(i, Want("model", "pending", due=False, backoff_step=e.backoff_step))

    def _honour_stop(self, i: int, who: int, target: tuple[int, int]) -> None:
        e = self.entries[i]
        reason = e.stop_reason if e.runs(target) else "normal"
        if reason is None:  # not asked to stop
            return
        if reason in WINNING_STOPS:
            after = self._after_exit(i, who, deregister=True)
            self._exit(i, who, "stop", lambda t: registry.exit_normally(self.s, *t, "stopped", reason), after)
        else:
            after = self._after_exit(i, who)
            self._exit(
                i,
                who,
                "stop",
                lambda t: registry.exit_abnormally(self.s, *t, "stopped", f"stop({reason!r})"),
                after,
            )

    @precondition(SEEN)
    @rule(
        picks=st.lists(st.tuples(ID, WHO), min_size=1, max_size=IDS, unique_by=lambda p: p[0]),
        w=st.one_of(st.just(0), PROCESS),
    )
    def claim_batch(self, picks: list[tuple[int, int]], w: int) -> None:
        """A batch message reaches worker process ``w``, naming for each entry its own incarnation
        (``which`` 0) or an older one: each is claimed exactly as its own message would claim it."""
        w = sorted(range(PROCESSES), key=lambda k: (not self.leases[self.processes[k]].live(), k))[w]
        worker_id = self.processes[w]
        members, ours, before = [], set(), {}
        for rank, which in picks:
            i = self.rank(rank, lambda e: e.status == "pending")
            e = self.entries[i]
            if not e.seen:
                continue
            epoch = e.epoch if which == 0 else e.seen[(which - 1) % len(e.seen)][1]
            members.append((e.txid, epoch))
            before[i] = self._snapshot(e)
            if e.status == "pending" and epoch == e.epoch and self.leases[worker_id].live():
                ours.add(e.txid)
                want = Want(
                    "model", "running", worker_id=worker_id, state=e.state, backoff_step=e.backoff_step
                )
                self.expect(i, want)
            else:
                self.expect(i, self.unchanged(e, "fencing" if self.leases[worker_id].live() else "lease"))
        if not members:
            return
        # One kind, one policy: the claim writes it to every entry it claims (as a claim does).
        policy = self.entries[next(iter(before))].policy
        got = registry.claim_batch(
            self.s, KIND, members, worker=f"w{w}@model", worker_id=worker_id, policy=policy
        )
        self.counts["batch claims"] += len(got)
        claimed = {r.transaction_id for r in got}
        for e in self.entries:
            if e.txid in claimed:
                e.policy = policy
        if claimed != ours:
            self.violation(
                "fencing", f"claim_batch {members} by {worker_id} claimed {claimed}, expected {ours}"
            )
        for i, snapshot in before.items():
            e = self.entries[i]
            if e.txid not in ours and self._snapshot(e) != snapshot:
                self.violation("fencing", f"{e.txid}: a batch claim that left it out changed it")

    @precondition(SEEN)
    @rule(
        picks=st.lists(st.tuples(ID, WHO), min_size=1, max_size=IDS, unique_by=lambda p: p[0]),
        interval=st.sampled_from([600.0, 0.0]),
    )
    def park_batch(self, picks: list[tuple[int, int]], interval: float) -> None:
        """A batch's incarnations (some superseded, some with mail or a stop waiting) park again
        together, each with its own state: each parks exactly as it would alone."""
        states, parking, before = [], set(), {}
        for rank, who in picks:
            i = self.rank(rank, _running)
            e = self.entries[i]
            target = self.target(e, who)
            if target is None:
                continue
            state = self._state()
            states.append((*target, state))
            before[i] = self._snapshot(e)
            if e.runs(target) and e.stop_reason is None and not e.queue:
                parking.add(target[0])
                self.expect(i, Want("model", "parked", state=state, backoff_step=e.backoff_step))
            else:
                why = "stop" if e.normal_stop else "mailbox" if e.runs(target) and e.queue else "fencing"
                self.expect(i, self.unchanged(e, why))
        if not states:
            return
        parked = registry.park_batch(self.s, states, interval)
        self.counts["batch parks"] += len(parked)
        if parked != parking:
            self.violation("fencing", f"park_batch {states} parked {parked}, expected {parking}")
        for i, snapshot in before.items():
            e = self.entries[i]
            if e.row_id not in parking and self._snapshot(e) != snapshot:
                self.violation("fencing", f"{e.txid}: a batch park that left it out changed it")

    @precondition(SEEN)
    @rule(picks=st.lists(st.tuples(ID, WHO), min_size=1, max_size=IDS, unique_by=lambda p: p[0]))
    def hand_off(self, picks: list[tuple[int, int]]) -> None:
        """A worker shutting down hands off its trackers (some of them superseded already)."""
        pairs: list[tuple[int, int]] = []
        handed: dict[str, str] = {}  # txid -> tag, for the entries to come back pending
        stale: dict[int, Any] = {}
        for rank, who in picks:
            i = self.rank(rank, _running)
            e = self.entries[i]
            target = self.target(e, who)
            if target is None:
                continue
            pairs.append(target)
            if not e.runs(target):
                stale[i] = self._snapshot(e)
                self.expect(i, self.unchanged(e, "fencing"))
            elif e.normal_stop:
                self.expect(i, Want("stop", None))
            elif e.stop_reason is not None:  # an abnormal stop recorded: it exits by its policy
                want = self.policy_exit(e, "stop")
                self.expect(i, want)
                if want.status == "pending":
                    handed[e.txid] = "stop"
            else:
                handed[e.txid] = "model"
                self.expect(i, Want("model", "pending", epoch="new", due=False, backoff_step=e.backoff_step))
        if not pairs:
            return
        rows = registry.hand_off(self.s, pairs, "worker shutting down")
        self.counts["handoffs"] += len(handed)
        got = {r.transaction_id for r in rows}
        for txid in got ^ set(handed):
            e = next(e for e in self.entries if e.txid == txid)
            why = "stop" if e.normal_stop else "fencing" if self.entries.index(e) in stale else "model"
            self.violation(why, f"{txid}: hand_off returned {sorted(got)}, expected {sorted(handed)}")
        for i, before in stale.items():
            if self._snapshot(self.entries[i]) != before:
                self.violation(
                    "fencing", f"{self.entries[i].txid}: a superseded incarnation's handoff changed it"
                )

    @precondition(SEEN)
    @rule(i=ID, call=st.booleans())
    def send(self, i: int, call: bool) -> None:
        """A cast or a call is queued for the tracker."""
        i = self.rank(i, lambda e: e.status not in (None, "dead"))
        e = self.entries[i]
        live = e.status not in (None, "dead")
        try:
            type_ = registry.MessageType.CALL if call else registry.MessageType.CAST
            message_id = registry.enqueue(self.s, KIND, e.txid, type_, {"n": self.n})
        except NotFound:
            if live:
                self.violation("model", f"{e.txid}: enqueue raised NotFound {self._brief(e)}")
            self.expect(i, self.unchanged(e))
            return
        if not live:
            self.violation("model", f"{e.txid}: enqueue for no live entry accepted {self._brief(e)}")
        if e.queue and message_id <= e.queue[-1]:
            self.violation("mailbox", f"{e.txid}: message {message_id} queued after {e.queue[-1]}")
        e.queue.append(message_id)
        want = self.unchanged(e)
        self.expect(i, dataclasses.replace(want, due=True) if e.status == "parked" else want)

    @precondition(lambda m: any(e.queue or e.handled for e in m.entries))
    @rule(i=ID, who=WHO, pick=st.one_of(st.just("next"), st.sampled_from(["next", "again", "skip"])))
    def handle_message(self, i: int, who: int, pick: str) -> None:
        """An incarnation handles a message: the next one, one handled before, or the one after next."""
        i = self.rank(i, lambda e: e.status == "running" and bool(e.queue))
        e = self.entries[i]
        target = self.target(e, who)
        if pick == "next":
            message = e.queue[0] if e.queue else None
        elif pick == "again":
            message = e.handled[-1] if e.handled else None
        else:
            message = e.queue[1] if len(e.queue) > 1 else None
        if target is None or message is None:
            return
        state = self._state()

        def write() -> None:
            registry.handled(self.s, *target, message, state, reply={"to": message})

        if not (e.runs(target) and pick == "next"):
            why = "mailbox" if e.runs(target) else "fencing"
            # The same incarnation writing its last message again is a retry (its first answer
            # lost): accepted quietly, changing nothing.
            retry = e.runs(target) and pick == "again"
            self.refused(e, why, f"handled({message}, {pick}) by {target}", write, quiet=retry)
            return
        try:
            write()
        except Fenced:
            self.violation("model", f"{e.txid}: handling the next message {message} by {target} fenced")
        e.queue.pop(0)
        e.handled.append(message)
        self.counts["messages handled"] += 1
        self.expect(i, dataclasses.replace(self.unchanged(e), state=state))

    # -- time and workers ------------------------------------------------------------------------------

    @precondition(lambda m: any(e.status in ("pending", "failed", "parked") for e in m.entries))
    @rule(i=ID)
    def due_time_passes(self, i: int) -> None:
        """The grace period of a pending entry, the backoff of a failed one or the park of a parked
        one runs out."""
        i = self.rank(i, lambda e: e.status in ("pending", "failed", "parked") and not e.due)
        e = self.entries[i]
        if e.status not in ("pending", "failed", "parked"):
            return
        # A lease period ago: a sweep wakes a parked or failed entry only once no waker did for that long.
        overdue = registry.db_now(-LEASE_SECONDS - 1)
        self._sql(trackers.update().where(trackers.c.id == e.row_id).values(due_at=overdue))
        self.expect(i, dataclasses.replace(self.unchanged(e), due=True))

    def _expire(self, worker_id: str) -> None:
        self._sql(
            workers.update()
            .where(workers.c.id == worker_id)
            .values(heartbeat_at=registry.db_now(-(LEASE_SECONDS + 60)))
        )
        lease = self.leases[worker_id]
        lease.expired = lease.alive

    @rule(w=PROCESS, how=st.sampled_from(["expires", "vanishes"]))
    def lease_lapses(self, w: int, how: str) -> None:
        """Worker process ``w`` stops renewing (paused, cut off) for longer than its lease; or its
        lease row is deleted behind its back (as a sweep's forget_workers racing its claim would)."""
        worker_id = self.processes[w]
        if how == "expires":
            self._expire(worker_id)
            return
        self._sql(workers.delete().where(workers.c.id == worker_id))
        lease = self.leases[worker_id]
        lease.alive, lease.expired, lease.deleted = False, False, True

    @rule(w=PROCESS)
    def renew(self, w: int) -> None:
        worker_id = self.processes[w]
        lease = self.leases[worker_id]
        renewed = registry.renew_worker(self.s, worker_id)
        if renewed and not lease.alive or not renewed and lease.live():
            self.violation("model", f"renewal of {worker_id} returned {renewed}, lease {lease}")
        if renewed:
            lease.alive, lease.expired = True, False
        else:  # declared lost: the runtime registers the process again under a new ID
            self.processes[w] = self._register(w)

    @rule(supervisors=st.integers(1, 2))
    def sweep(self, supervisors: int) -> None:
        self._sweep(supervisors)

    @precondition(lambda m: any(e.status == "running" for e in m.entries))
    @rule()
    def every_lease_expires_then_one_sweep(self) -> None:
        """None stranded: after every lease expired, one sweep leaves no entry running."""
        for worker_id in self.processes:
            self._expire(worker_id)
        self._sweep(1)
        self._no_entry_running()
        for w in range(PROCESSES):  # each finds out at its next renewal, and registers again
            self.renew(w)

    def _no_entry_running(self) -> None:
        running = {txid: r["worker_id"] for txid, r in self._entries().items() if r["status"] == "running"}
        if running:
            self.violation(
                "stranded", f"entries still running after a sweep with every lease expired: {running}"
            )

    def _sweep(self, supervisors: int) -> None:
        publish: dict[int, str] = {}
        for i, e in enumerate(self.entries):
            if e.status == "running":
                lease = self.leases.get(e.worker_id or "")
                if lease is not None and lease.live():
                    continue
                why = "stranded" if lease is None or lease.deleted else "stop" if e.normal_stop else "loss"
                if e.normal_stop:
                    self.expect(i, Want(why, None))
                    continue
                want = self.policy_exit(e, why, lost=True)
                self.counts["worker losses"] += 1
                self.expect(i, want)
                if want.status == "pending":
                    publish[i] = why
            elif (e.status == "pending" and e.due) or (e.status in ("failed", "parked") and e.overdue):
                epoch = {"pending": "same", "failed": "any", "parked": "new"}[e.status]
                self.expect(i, Want("model", "pending", epoch=epoch, due=False, backoff_step=e.backoff_step))
                publish[i] = "model"
        for lease in self.leases.values():
            if lease.expired:
                lease.alive = lease.expired = False

        published: list[Publishable] = []
        all_at_once(
            [
                partial(supervisor.sweep, self.s, published.append, name=f"model-supervisor-{n}")
                for n in range(supervisors)
            ]
        )
        self.counts["sweeps"] += supervisors

        rows = self._entries()
        for i, e in enumerate(self.entries):
            got = [r.epoch for r in published if r.transaction_id == e.txid]
            row = rows.get(e.txid)
            if i in publish:
                now = (row["epoch"], row["status"]) if row is not None else None
                if now is None or got != [now[0]] or now[1] != "pending":
                    self.violation(publish[i], f"{e.txid}: published {got}, entry now {now} {self._brief(e)}")
            elif got:
                why = self.wants[i].why if i in self.wants else "model"
                self.violation(why, f"{e.txid}: published {got} unexpectedly {self._brief(e)}")

    # -- invariants ------------------------------------------------------------------------------------

    @invariant()
    def registry_matches_the_model(self) -> None:
        rows = self._entries()
        for i, e in enumerate(self.entries):
            want = self.wants.pop(i, None) or self.unchanged(e)
            row = rows.get(e.txid)
            self._compare(e, want, row)
            self._structure(e, row)
            self._adopt(e, row)
            if self.diverged and row is not None:
                # The model followed a tolerated violation: count the restarts the registry made.
                e.restarts = len(row["restart_times"])
        self.diverged = False
        self.wants.clear()
        self._mailboxes(rows)
        self._workers()
        self.counts["steps"] += 1

    def _compare(self, e: Entry, want: Want, row: dict[str, Any] | None) -> None:
        why = want.why
        if row is not None and (row["id"], row["epoch"]) != e.current() and row["epoch"] <= e.max_epoch:
            self.violation(
                "token",
                f"{e.txid}: incarnation {row['id']}/{row['epoch']} ({row['status']}) after the ID had "
                f"epoch {e.max_epoch} {self._brief(e)}",
            )
        if want.status is None:
            if row is not None:
                self.violation(
                    why, f"{e.txid}: expected no entry, found {row['status']} epoch {row['epoch']}"
                )
            return
        if row is None:
            self.violation(why, f"{e.txid}: expected {want.status}, the entry is gone {self._brief(e)}")
            return
        found = f"found {row['status']} {row['id']}/{row['epoch']} {self._brief(e)}"
        if row["status"] != want.status:
            self.violation(why, f"{e.txid}: expected {want.status}, {found}")
        same = (row["id"], row["epoch"]) == e.current()
        if want.epoch == "same" and not same:
            self.violation(why, f"{e.txid}: expected the same incarnation, {found}")
        if want.epoch == "new" and same:
            self.violation(why, f"{e.txid}: expected a new incarnation, {found}")
        if not want.new_life and e.row_id is not None and row["id"] != e.row_id:
            self.violation(why, f"{e.txid}: the entry's row changed, {found}")
        if want.status == "running" and row["worker_id"] != want.worker_id:
            self.violation(why, f"{e.txid}: expected to run under {want.worker_id}, {found}")
        if want.due is not None and row["status"] in ("pending", "failed", "parked"):
            if bool(row["is_due"]) != want.due:
                self.violation(why, f"{e.txid}: expected due={want.due}, {found} due at {row['due_at']}")
        if want.state is not KEEP and row["state"] != want.state:
            self.violation(why, f"{e.txid}: expected state {want.state}, {found} with state {row['state']}")
        if want.backoff_step is not None and row["backoff_step"] != want.backoff_step:
            self.violation(
                why, f"{e.txid}: expected backoff step {want.backoff_step}, {found} at {row['backoff_step']}"
            )

    def _structure(self, e: Entry, row: dict[str, Any] | None) -> None:
        if row is None:
            return
        if row["status"] in ("pending", "failed", "parked") and row["due_at"] is None:
            self.violation("stranded", f"{e.txid}: {row['status']} with no due time: nobody will pick it up")
        if row["status"] == "running" and row["worker_id"] is None:
            self.violation("stranded", f"{e.txid}: running under no worker")

    def _adopt(self, e: Entry, row: dict[str, Any] | None) -> None:
        if row is None:
            e.status, e.worker_id, e.stop_reason, e.due, e.overdue = None, None, None, False, False
            e.normal_stop, e.queue, e.handled = False, [], []
            return
        incarnation = (row["id"], row["epoch"])
        if incarnation != e.current() or row["status"] != "running":
            e.normal_stop = False
        if incarnation not in e.seen:
            e.seen.append(incarnation)
            self.counts["incarnations"] += 1
        e.row_id, e.epoch, e.status = row["id"], row["epoch"], row["status"]
        e.worker_id = row["worker_id"] if row["status"] == "running" else None
        e.stop_reason, e.due, e.state = row["stop_reason"], bool(row["is_due"]), row["state"]
        e.overdue = bool(row["is_overdue"])
        e.backoff_step = row["backoff_step"]
        e.max_epoch = max(e.max_epoch, row["epoch"])

    def _mailboxes(self, rows: dict[str, dict[str, Any]]) -> None:
        """Each entry's mailbox, as the runtime reads it (after the last message handled), holds
        the messages the model queued, in order."""
        stmt = (
            sa.select(messages.c.transaction_id, messages.c.id)
            .where(messages.c.kind == KIND, messages.c.status == "queued")
            .order_by(messages.c.id)
        )
        queued: dict[str, list[int]] = {}
        for m in self._read_rows(self.s, stmt):
            queued.setdefault(m["transaction_id"], []).append(m["id"])
        for e in self.entries:
            row = rows.get(e.txid)
            after = row["handled_message_id"] if row is not None else 0
            if not (e.queue or queued.get(e.txid)):
                continue
            if e.status == "dead":  # its mail may be kept for inspection or dropped: nobody reads it
                e.queue = [m for m in e.queue if m in queued.get(e.txid, [])]
            found = [m.id for m in registry.mailbox(self.s, KIND, e.txid, after=after)]
            if found != e.queue:
                self.violation("mailbox", f"{e.txid}: mailbox after {after}: {found}, expected {e.queue}")
                e.queue = found

    def _workers(self) -> None:
        stmt = sa.select(
            workers.c.id,
            workers.c.status,
            (workers.c.heartbeat_at < registry.db_now(-LEASE_SECONDS)).label("expired"),
        )
        found = {r["id"]: r for r in self._read_rows(self.s, stmt)}
        for worker_id, lease in self.leases.items():
            row = found.get(worker_id)
            alive = row is not None and row["status"] == "alive"
            expired = alive and bool(row["expired"]) if row is not None else False
            if (alive, expired) != (lease.alive, lease.expired):
                self.violation("model", f"lease {worker_id}: expected {lease}, found {row}")
                lease.alive, lease.expired = alive, expired

    def teardown(self) -> None:
        if sys.exc_info()[1] is not None:  # a step failed: leave its error alone
            return
        self.every_lease_expires_then_one_sweep()
        self.registry_matches_the_model()


def _run(backend: str, settings: Settings) -> None:
    registry.migrate(settings)
    tables = tuple(sorted(set(sa.inspect(registry.engine(settings)).get_table_names()) - {"alembic_version"}))
    counts: Counter[str] = Counter()

    class Machine(RegistryModel):
        config = Config(settings, tables, counts)

    Machine.__name__ = Machine.__qualname__ = f"RegistryModel_{backend}"
    try:
        run_state_machine_as_test(Machine, settings=PROFILE)
    finally:
        MODEL_RUNS[backend] = dict(counts)


@pytest.fixture
def model_settings(database_url: str) -> Iterator[Settings]:
    settings = Settings(
        database_url=database_url,
        lease_seconds=LEASE_SECONDS,
        heartbeat_seconds=60,
        start_grace_seconds=600,
    )
    try:
        yield settings
    finally:
        registry.dispose(settings)


@pytest.mark.timeout(0 if LONG else 900)  # a failure is shrunk, which takes minutes
def test_the_registry_keeps_its_invariants_under_random_operations(model_settings: Settings) -> None:
    backend = "postgresql" if model_settings.database_url.startswith("postgresql") else "sqlite"
    _run(backend, model_settings)
