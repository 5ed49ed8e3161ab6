"""Real worker and beat processes on a stack.

Workers run as ``celery -A tracking worker`` subprocesses in their own process group (so a fault
hits the whole group) with the stack's environment (its URLs and short lease timings), each
writing its log to the stack's folder.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
from types import TracebackType
from typing import Any

import pytest
import sqlalchemy as sa

from tests.harness.polling import wait_for
from tests.harness.stacks import Stack


class Cluster:
    """The worker and beat processes of one stack. As a context manager: all stopped at the end,
    and none of their logs may hold the database password, if the stack's URL has one."""

    def __init__(self, stack: Stack, concurrency: int = 60) -> None:
        self.stack = stack
        #: the worker slots (threads or greenlets) a worker has unless told otherwise
        self.concurrency = concurrency
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.spawned: set[str] = set()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        password = sa.make_url(self.stack.database_url).password
        if kind is None and password:
            for name in sorted(self.spawned):
                assert str(password) not in self.log(name), f"the database password reached {name}'s log"

    def start(self, *workers: str, beat: bool = False) -> Cluster:
        """Start ``workers`` (each ready to consume when this returns), then beat if asked."""
        for name in workers:
            self.worker(name)
        if beat:
            self.beat()
        return self

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
        self.spawned.add(name)
        return proc

    def worker(
        self, name: str, concurrency: int | None = None, app: str = "tracking", pool: str = "threads"
    ) -> subprocess.Popen[bytes]:
        """A worker ``name@<host>`` reading the stack's queue, ready to consume when this returns."""
        proc = self._spawn(
            name,
            [
                "worker",
                "-P",
                pool,
                "-c",
                str(concurrency or self.concurrency),
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


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """The cluster a module asks for: ``pytest.mark.cluster(**options)``.

    By default the tests of a module share one cluster of two workers (w1, w2) and beat, started
    when a test first asks for it. With ``each_test=True`` every test gets a cluster of its own,
    which starts nothing by itself (the test starts and breaks what it needs) and after which the
    stack's registry is emptied, so that no orphan of one test is restarted on the next one's workers.
    """

    workers: tuple[str, ...] = ("w1", "w2")
    beat: bool = True
    #: the worker slots each worker has
    concurrency: int = 60
    each_test: bool = False

    @classmethod
    def of(cls, node: pytest.Item | pytest.Collector) -> ClusterSpec:
        marker = node.get_closest_marker("cluster")
        if marker is None:
            return cls()
        nothing: dict[str, Any] = {"workers": (), "beat": False} if marker.kwargs.get("each_test") else {}
        return cls(**{**nothing, **marker.kwargs})


def free_port() -> int:
    """A TCP port nobody listens on at the moment, on the loopback address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
