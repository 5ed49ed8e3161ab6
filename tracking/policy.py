"""Restart policy: OTP's restart types and intensity, plus exponential backoff.

Pure functions of a tracker's recorded history and the database's clock; the registry applies the
decision in the same transaction that read the history.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from typing import Any

from tracking.exceptions import InvalidTracker


class Restart(enum.StrEnum):
    PERMANENT = "permanent"  # restarted after any exit, its own Done included
    TRANSIENT = "transient"  # restarted after an abnormal exit only (the default)
    TEMPORARY = "temporary"  # never restarted: left dead after an abnormal exit


class Action(enum.StrEnum):
    RESTART = "restart"
    DEAD = "dead"
    DEREGISTER = "deregister"


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    restart: Restart = Restart.TRANSIENT
    max_restarts: int = 3
    max_seconds: float = 5.0
    backoff: float = 1.0
    backoff_max: float = 60.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "restart", Restart(self.restart))
        except ValueError:
            raise InvalidTracker(
                f"restart must be one of {[r.value for r in Restart]}, not {self.restart!r}"
            ) from None
        for name in ("max_restarts", "max_seconds", "backoff", "backoff_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidTracker(f"{name} must be a number >= 0, not {value!r}")
        if not isinstance(self.max_restarts, int):
            raise InvalidTracker(f"max_restarts must be an int, not {self.max_restarts!r}")
        if self.backoff_max < self.backoff:
            raise InvalidTracker("backoff_max must be at least backoff")

    def why_dead(self) -> str:
        """Why an abnormal exit under this policy ends the tracker (when ``decide`` says dead)."""
        if self.restart is Restart.TEMPORARY:
            return "temporary trackers are not restarted"
        return f"more than {self.max_restarts} restarts in {self.max_seconds} s"

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["restart"] = self.restart.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RestartPolicy:
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class Decision:
    action: Action
    #: seconds to wait before the restart (0: at once)
    delay: float = 0.0
    #: the restart history to record (ISO timestamps by the database clock)
    restart_times: tuple[str, ...] = ()
    backoff_step: int = 0


def decide(
    policy: RestartPolicy,
    *,
    normal: bool,
    lost: bool = False,
    now: datetime,
    restart_times: list[str],
    backoff_step: int,
    ran_seconds: float | None,
) -> Decision:
    """What happens after an incarnation exits (``normal``: it raised ``Done``; ``lost``: its
    worker lost its lease).

    A lost worker is not the tracker's own crash loop: it restarts at once and leaves the backoff
    as it was (or resets it, if the incarnation ran longer than ``max_seconds``), but it counts
    toward the intensity, so a tracker that takes its worker down every time still ends dead.
    """
    if normal and policy.restart is not Restart.PERMANENT:
        return Decision(Action.DEREGISTER)
    if not normal and policy.restart is Restart.TEMPORARY:
        return Decision(Action.DEAD)
    recent = [
        t for t in restart_times if (now - datetime.fromisoformat(t)).total_seconds() < policy.max_seconds
    ]
    if len(recent) >= policy.max_restarts:
        return Decision(Action.DEAD, restart_times=tuple(recent))
    if ran_seconds is not None and ran_seconds > policy.max_seconds:
        backoff_step = 0  # it ran well: whatever comes next starts the backoff afresh
    if lost:
        return Decision(Action.RESTART, restart_times=(*recent, now.isoformat()), backoff_step=backoff_step)
    delay = 0.0 if backoff_step == 0 else min(policy.backoff * 2 ** (backoff_step - 1), policy.backoff_max)
    return Decision(
        Action.RESTART,
        delay=delay,
        restart_times=(*recent, now.isoformat()),
        backoff_step=backoff_step + 1,
    )
