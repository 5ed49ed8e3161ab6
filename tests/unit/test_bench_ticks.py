"""The parked benchmark's count of lost ticks (``bench.parkedrun.ticks``): a tick that ran is never
counted as lost, however close to the window's end it was due."""

from __future__ import annotations

from bench.parkedrun import ticks

INTERVAL = 300.0


def state_after_one_tick(due: float) -> dict[str, object]:
    """A ParkedBench state after its tick due at ``due`` ran 0.1 s late (as its tick writes it)."""
    return {"due": due + INTERVAL, "ticks": 1, "log": [[round(due, 3), round(due, 3), round(due + 0.1, 3)]]}


def test_a_tick_due_just_before_the_end_of_the_window_that_ran_is_not_lost() -> None:
    base, seconds = 1000.0, 600.0
    due = base + seconds - 0.0004  # rounds to the end itself in the log

    found = ticks([(state_after_one_tick(due), due + INTERVAL)], base, seconds, base + seconds + 5, INTERVAL)

    assert found["lost"] == 0


def test_a_tick_of_the_window_that_never_ran_is_lost() -> None:
    base, seconds = 1000.0, 600.0
    state = {"due": base + 10.0, "ticks": 0, "log": []}  # first due in the window, never ticked

    found = ticks([(state, base + 10.0)], base, seconds, base + seconds + 5, INTERVAL)

    assert found["lost"] == 2  # due at +10 s and +310 s
