"""Configuration, read once into a frozen :class:`Settings`.

Every value comes from a ``TRACKING_*`` environment variable or the same key in a mapping (a
``celeryconfig`` module, Flask ``app.config``, Django settings). Nothing else in the package reads
the environment.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("tracking.settings")

DEFAULT_DATABASE_URL = "sqlite:///tracking.sqlite3"
DEFAULT_BROKER_URL = "embedded://localhost//"
DEFAULT_BROKER_FOLDER = ".tracking-broker"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything `tracking` can be told. Times are in seconds."""

    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    #: the folder of the embedded broker (``embedded://``)
    broker_folder: str = DEFAULT_BROKER_FOLDER
    #: modules that define trackers; workers import them
    imports: tuple[str, ...] = ()
    #: the queue tracker tasks are sent to (None: the Celery app's default queue)
    queue: str | None = None
    #: how often each worker process renews the lease of all its trackers (one write)
    heartbeat_seconds: float = 5.0
    #: a worker process whose lease is older than this (by the database clock) is lost
    lease_seconds: float = 30.0
    #: how often beat runs the supervisor sweep
    sweep_seconds: float = 10.0
    #: a tracker recorded but not picked up within this is published again
    start_grace_seconds: float = 30.0
    #: how often a worker process looks for stop requests addressed to its trackers
    control_poll_seconds: float = 0.1
    #: trackers whose interval is at least this park between ticks: they give their worker slot
    #: back and the registry wakes them when the next tick is due (0: only trackers that set
    #: ``park = True`` park)
    park_seconds: float = 60.0
    #: how long exit history (``tracking_events``) and answered calls nobody collected are kept;
    #: the sweep prunes older ones in small batches
    events_retention_seconds: float = 7 * 24 * 3600.0
    #: the largest state (JSON, UTF-8) a tracker may checkpoint
    max_state_bytes: int = 64 * 1024
    #: create the registry table on first use (only for SQLite; use `tracking migrate` elsewhere)
    auto_migrate: bool | None = None
    #: the port each worker serves Prometheus metrics on (None: no metrics; needs the
    #: ``prometheus`` extra)
    metrics_port: int | None = None
    #: the address the metrics endpoint binds to (loopback unless told)
    metrics_address: str = "127.0.0.1"

    def __post_init__(self) -> None:
        for name in (
            "heartbeat_seconds",
            "lease_seconds",
            "sweep_seconds",
            "start_grace_seconds",
            "control_poll_seconds",
            "events_retention_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"TRACKING_{name.upper()} must be positive")
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError(
                "TRACKING_LEASE_SECONDS must be at least twice TRACKING_HEARTBEAT_SECONDS, "
                "or a busy worker loses its lease between two heartbeats"
            )
        if self.park_seconds < 0:
            raise ValueError("TRACKING_PARK_SECONDS must be zero or positive")
        if self.max_state_bytes <= 0:
            raise ValueError("TRACKING_MAX_STATE_BYTES must be positive")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError("TRACKING_METRICS_PORT must be a TCP port (0 to 65535)")

    @property
    def lock_timeout_seconds(self) -> float:
        """How long a PostgreSQL session may sit idle inside a transaction, and a statement wait
        for a row lock: half a lease (at least a second). A worker paused mid-transaction then
        releases its row locks before its lease runs out, so the takeover of its trackers is not
        held up by them."""
        return max(1.0, self.lease_seconds / 2)

    @property
    def migrates_itself(self) -> bool:
        if self.auto_migrate is not None:
            return self.auto_migrate
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **base: Any) -> Settings:
        """Settings from ``TRACKING_*`` variables (and ``CELERY_BROKER_URL``) over ``base``."""
        return cls.from_mapping({**base, **env_values(environ)})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Settings from a mapping whose keys are the variable names without ``TRACKING_``.

        Unknown keys are refused so that a typo does not silently keep a default.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            name = key.lower()
            if name not in fields:
                raise ValueError(f"unknown tracking setting TRACKING_{key.upper()}")
            kwargs[name] = _coerce(name, fields[name].default, raw)
        return cls(**kwargs)

    def with_overrides(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.public_dict().items())
        return f"Settings({fields})"

    def public_dict(self) -> dict[str, Any]:
        """The settings with passwords masked, for logs and command output."""
        from tracking.redact import redact_url

        data = dataclasses.asdict(self)
        data["database_url"] = redact_url(self.database_url)
        data["broker_url"] = redact_url(self.broker_url)
        return data


PREFIX = "tracking_"


def unprefixed(config: Mapping[str, Any], ignore: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The ``TRACKING_*`` (or ``tracking_*``) keys of ``config``, keyed as :class:`Settings`
    fields (without the prefix, in lower case), but those in ``ignore``."""
    return {
        key[len(PREFIX) :].lower(): value
        for key, value in config.items()
        if key.lower().startswith(PREFIX) and key not in ignore
    }


def env_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings the environment sets, keyed without ``TRACKING_``.

    Unknown ``TRACKING_*`` variables are logged and ignored (a platform may set some of its own, as
    Kubernetes does for a Service named "tracking"); unknown keys in a file are refused.
    """
    env = os.environ if environ is None else environ
    names = {f.name for f in dataclasses.fields(Settings)}
    values: dict[str, str] = {}
    if "CELERY_BROKER_URL" in env:
        values["broker_url"] = env["CELERY_BROKER_URL"]
    for name, value in unprefixed({k: v for k, v in env.items() if k.startswith("TRACKING_")}).items():
        if name in names:
            values[name] = value
        else:
            log.warning("ignoring unknown environment variable TRACKING_%s", name.upper())
    return values


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def _coerce(name: str, default: Any, raw: Any) -> Any:
    """``raw`` (a string from the environment or a file, or a value already typed) as setting
    ``name`` wants it; a ValueError that names the variable and what it accepts otherwise."""
    if not isinstance(raw, str):
        return tuple(raw) if name == "imports" else raw
    variable = f"TRACKING_{name.upper()}"
    if name == "imports":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if name == "queue":
        return raw or None
    if name == "auto_migrate" and raw.strip().lower() in {"", "auto"}:
        return None  # the default: on for SQLite, off otherwise
    if name == "auto_migrate" or isinstance(default, bool):
        word = raw.strip().lower()
        if word in TRUE_WORDS | FALSE_WORDS:
            return word in TRUE_WORDS
        accepted = "1, true, yes, on / 0, false, no, off" + (", auto" if name == "auto_migrate" else "")
        raise ValueError(f"{variable} must be one of {accepted} (any case), not {raw!r}")
    if name == "metrics_port" and not raw.strip():
        return None
    number = int if name == "metrics_port" or isinstance(default, int) else float
    if not isinstance(default, int | float) and name != "metrics_port":
        return raw
    try:
        return number(raw)
    except ValueError:
        kind = "a whole number" if number is int else "a number"
        raise ValueError(f"{variable} must be {kind}, not {raw!r}") from None
