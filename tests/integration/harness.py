"""Real worker and beat processes for integration tests, and bounded polling.

Workers run as ``celery -A tracking worker`` subprocesses in their own process group (so a fault
hits the whole group) with the stack's URLs and short lease timings in their environment.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from celery import Celery

import tracking
from tracking.celery import recommended_config
from tracking.settings import Settings

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
TIMINGS = {
    "heartbeat_seconds": 0.5,
    "lease_seconds": 3.0,
    "sweep_seconds": 1.0,
    "start_grace_seconds": 3.0,
    "control_poll_seconds": 0.1,
}


def wait_for(
    condition: Callable[[], T | Literal[False] | None],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds.

    The truthy value is returned, so a ``None`` or ``False`` that the condition may give is not
    part of the result's type.
    """
    deadline = time.monotonic() + timeout
    last = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}: {last!r}")
        time.sleep(interval)
        last = condition()
    return last


@dataclasses.dataclass
class Stack:
    """A registry database and a broker, with the settings and Celery app the test process uses."""

    name: str
    database_url: str
    broker_url: str
    folder: Path
    redis_prefix: str | None = None
    queue: str = "tracking-test"

    def settings(self) -> Settings:
        return Settings(
            database_url=self.database_url,
            broker_url=self.broker_url,
            broker_folder=str(self.folder / "broker"),
            queue=self.queue,
            imports=("tests.integration.trackers",),
            **TIMINGS,  # type: ignore[arg-type]
        )

    def transport_options(self) -> dict[str, Any]:
        if self.redis_prefix:
            return {"global_keyprefix": self.redis_prefix}
        return {}

    def app(self) -> Celery:
        settings = self.settings()
        app = Celery(f"tests-{self.name}", set_as_current=False)
        conf = recommended_config(settings)
        conf["broker_transport_options"] = {
            **conf.get("broker_transport_options", {}),
            **self.transport_options(),
        }
        app.conf.update(conf)
        tracking.install(app, settings)
        return app

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKING_", "CELERY_"))}
        env.update(
            PYTHONPATH=str(ROOT),
            TRACKING_DATABASE_URL=self.database_url,
            CELERY_BROKER_URL=self.broker_url,
            TRACKING_BROKER_FOLDER=str(self.folder / "broker"),
            TRACKING_QUEUE=self.queue,
            TRACKING_IMPORTS="tests.integration.trackers",
            CELERY_CONFIG_MODULE="tests.integration.worker_config",
            TEST_REDIS_PREFIX=self.redis_prefix or "",
        )
        for key, value in TIMINGS.items():
            env[f"TRACKING_{key.upper()}"] = str(value)
        return env


class Cluster:
    """The worker and beat processes of one stack."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, args: list[str], app: str = "tracking") -> subprocess.Popen[bytes]:
        log = open(self.stack.folder / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", app, *args],
            cwd=self.stack.folder,
            env=self.stack.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def worker(self, name: str, concurrency: int = 60, app: str = "tracking") -> subprocess.Popen[bytes]:
        proc = self._spawn(
            name,
            [
                "worker",
                "-P",
                "threads",
                "-c",
                str(concurrency),
                "-Q",
                self.stack.queue,
                "--hostname",
                f"{name}@%h",
                "-l",
                "info",
                "--without-mingle",
                "--without-gossip",
            ],
            app=app,
        )
        self.wait_ready(name)
        return proc

    def beat(self) -> subprocess.Popen[bytes]:
        schedule = self.stack.folder / "beat-schedule"
        return self._spawn("beat", ["beat", "-l", "info", "-s", str(schedule)])

    def log(self, name: str) -> str:
        path = self.stack.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        proc = self.procs[name]

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")
            return " ready." in self.log(name)

        wait_for(ready, timeout=timeout, interval=0.1, what=f"{name} to be ready")

    def signal(self, name: str, sig: signal.Signals) -> None:
        os.killpg(self.procs[name].pid, sig)

    def stop(self, name: str, timeout: float = 30.0) -> int:
        """Warm shutdown (SIGTERM); SIGKILL if it has not exited within ``timeout``."""
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                raise AssertionError(f"{name} did not exit within {timeout} s of SIGTERM") from None
        return proc.returncode

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def close(self) -> None:
        for name in list(self.procs):
            try:
                self.stop(name, timeout=15)
            except (AssertionError, ProcessLookupError):
                pass
