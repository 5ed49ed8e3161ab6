"""Restart policy decisions: OTP restart types, intensity and backoff (no services)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import tracking
from tracking.policy import Action, RestartPolicy, decide

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat()


def test_a_transient_tracker_is_deregistered_after_done_and_restarted_after_a_crash() -> None:
    policy = RestartPolicy()
    assert decide(policy, normal=True, now=NOW, restart_times=[], backoff_step=0, ran_seconds=1).action is (
        Action.DEREGISTER
    )
    crash = decide(policy, normal=False, now=NOW, restart_times=[], backoff_step=0, ran_seconds=1)
    assert crash.action is Action.RESTART and crash.delay == 0


def test_a_temporary_tracker_is_dead_after_a_crash() -> None:
    policy = RestartPolicy(restart="temporary")  # type: ignore[arg-type]
    assert decide(policy, normal=False, now=NOW, restart_times=[], backoff_step=0, ran_seconds=1).action is (
        Action.DEAD
    )


def test_a_permanent_tracker_is_restarted_after_done() -> None:
    policy = RestartPolicy(restart="permanent")  # type: ignore[arg-type]
    assert decide(policy, normal=True, now=NOW, restart_times=[], backoff_step=0, ran_seconds=1).action is (
        Action.RESTART
    )


def test_more_than_max_restarts_within_max_seconds_is_dead() -> None:
    policy = RestartPolicy(max_restarts=3, max_seconds=5)
    three = [ago(4), ago(3), ago(1)]
    assert decide(
        policy, normal=False, now=NOW, restart_times=three, backoff_step=3, ran_seconds=0
    ).action is (Action.DEAD)
    old = [ago(50), ago(40), ago(1)]
    assert decide(policy, normal=False, now=NOW, restart_times=old, backoff_step=3, ran_seconds=0).action is (
        Action.RESTART
    )


def test_max_restarts_zero_makes_the_first_crash_final() -> None:
    policy = RestartPolicy(max_restarts=0)
    assert decide(policy, normal=False, now=NOW, restart_times=[], backoff_step=0, ran_seconds=0).action is (
        Action.DEAD
    )


def test_backoff_doubles_up_to_its_maximum_and_resets_after_a_long_run() -> None:
    policy = RestartPolicy(max_restarts=100, max_seconds=5, backoff=1, backoff_max=3)
    delays = [
        decide(policy, normal=False, now=NOW, restart_times=[], backoff_step=s, ran_seconds=0).delay
        for s in range(5)
    ]
    assert delays == [0, 1, 2, 3, 3]
    long_run = decide(policy, normal=False, now=NOW, restart_times=[], backoff_step=4, ran_seconds=6)
    assert long_run.delay == 0 and long_run.backoff_step == 1


@pytest.mark.parametrize(
    "attrs",
    [
        {"restart": "sometimes"},
        {"max_restarts": -1},
        {"max_seconds": -5},
        {"backoff": -1},
        {"backoff": 10, "backoff_max": 1},
        {"max_restarts": 1.5},
        {"interval": 0},
        {"interval": "fast"},
        {"kind": ""},
        {"kind": "has space"},
    ],
)
def test_invalid_settings_raise_at_class_definition(attrs: dict[str, object]) -> None:
    with pytest.raises(tracking.InvalidTracker):
        type("Broken", (tracking.Tracker,), dict(attrs))


def test_a_lost_worker_restarts_at_once_and_leaves_the_backoff_as_it_was() -> None:
    policy = RestartPolicy(max_restarts=10, max_seconds=60, backoff=1, backoff_max=60)
    decision = decide(
        policy,
        normal=False,
        lost=True,
        now=NOW,
        restart_times=[ago(5), ago(3)],
        backoff_step=2,
        ran_seconds=1,
    )
    assert decision.action is Action.RESTART
    assert decision.delay == 0
    assert decision.backoff_step == 2
    assert len(decision.restart_times) == 3, "a worker loss still counts toward intensity"


def test_a_worker_loss_after_a_long_healthy_run_resets_the_backoff() -> None:
    """A tracker at a high backoff step that then ran for an hour loses its worker, and its next
    incarnation crashes at once: that crash restarts without the old backoff."""
    policy = RestartPolicy(max_restarts=10, max_seconds=60, backoff=1, backoff_max=60)
    lost = decide(
        policy, normal=False, lost=True, now=NOW, restart_times=[], backoff_step=6, ran_seconds=3600
    )
    assert lost.action is Action.RESTART and lost.delay == 0
    assert lost.backoff_step == 0
    crash = decide(
        policy,
        normal=False,
        now=NOW,
        restart_times=list(lost.restart_times),
        backoff_step=lost.backoff_step,
        ran_seconds=1,
    )
    assert crash.action is Action.RESTART and crash.delay == 0


def test_a_tracker_that_takes_its_worker_down_every_time_ends_dead() -> None:
    policy = RestartPolicy(max_restarts=3, max_seconds=60)
    times: list[str] = []
    actions = []
    for _ in range(4):
        decision = decide(
            policy, normal=False, lost=True, now=NOW, restart_times=times, backoff_step=0, ran_seconds=1
        )
        actions.append(decision.action)
        times = list(decision.restart_times)
    assert actions == [Action.RESTART, Action.RESTART, Action.RESTART, Action.DEAD]
