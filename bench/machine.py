"""What the figures were measured on, how busy the machine was meanwhile, and what processes use
(from /proc). Stdlib only: ``bench.raypeer`` imports it."""

from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Self

NOISY_LOAD = 3.0
#: jiffies per second (the unit of /proc CPU times)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _field(path: str, name: str, default: str = "0") -> str:
    """The first value after ``name:`` in a /proc file of ``key: value`` lines."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name) and line[len(name) :].lstrip(" \t").startswith(":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def status_kib(pid: int, name: str = "VmRSS") -> int:
    return int(_field(f"/proc/{pid}/status", name).split()[0])


def pss_kib(pid: int) -> int:
    return int(_field(f"/proc/{pid}/smaps_rollup", "Pss").split()[0])


def processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/<pid>/stat after ``pid (comm)``) of every process."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    yield int(entry), f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # the process exited meanwhile


def descendants(root: int) -> list[int]:
    """Every process below ``root``, by parent ID."""
    parents = {pid: int(fields[1]) for pid, fields in processes()}
    found: list[int] = []
    frontier = [root]
    for _depth in range(20):  # bounded
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += frontier
    return found


def group_usage(pgid: int) -> tuple[int, float]:
    """(VmRSS KiB, CPU seconds) summed over every process in the process group ``pgid``."""
    rss, cpu = 0, 0.0
    for pid, fields in processes():
        if int(fields[2]) == pgid:  # state, ppid, pgrp, ...
            cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
            rss += status_kib(pid)
    return rss, cpu


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _git_revision() -> str:
    """The commit measured, and whether ``tracking/`` differed from it."""

    def git(*args: str) -> str:
        root = Path(__file__).resolve().parent.parent
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit, changed = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--", "tracking")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + (" with uncommitted changes in tracking/" if changed else "")


def describe(servers: dict[str, str]) -> list[tuple[str, str]]:
    """The machine, the libraries and the servers, as recorded next to the figures."""
    kib = int(_field("/proc/meminfo", "MemTotal").split()[0])
    v = _version
    return [
        ("CPU cores (`os.cpu_count()`)", str(os.cpu_count())),
        ("CPU", _field("/proc/cpuinfo", "model name", platform.processor() or "unknown")),
        ("memory (`/proc/meminfo` MemTotal)", f"{kib / 1024 / 1024:.1f} GiB"),
        ("OS", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("Python", platform.python_version()),
        ("tracking", f"{v('tracking')}, git {_git_revision()}"),
        ("Celery / kombu", f"{v('celery')} / {v('kombu')}"),
        ("SQLAlchemy", v("sqlalchemy")),
        ("psycopg / redis-py", f"{v('psycopg')} / {v('redis')}"),
        (
            "PostgreSQL / Redis / RabbitMQ servers (loopback)",
            " / ".join(servers.get(s, "?") for s in ("postgresql", "redis", "rabbitmq")),
        ),
    ]


class Sampler:
    """Calls ``sample()`` every ``period`` seconds in a thread of its own while in the ``with``
    block; keeps (time.time(), what it returned), and the errors it raised, as text."""

    def __init__(self, sample: Callable[[], Any], period: float = 1.0, limit: int = 100_000) -> None:
        self.sample, self.period, self.limit = sample, period, limit
        self.samples: list[tuple[float, Any]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        for _round in range(self.limit):  # bounded; ends when told
            t = time.time()
            try:
                self.samples.append((t, self.sample()))
            except Exception as exc:  # keep sampling; say what failed
                self.errors.append(f"{type(exc).__name__}: {exc}")
            if self._stop.wait(max(0.0, self.period - (time.time() - t))):
                return

    def between(self, began: float, ended: float) -> list[Any]:
        return [value for t, value in self.samples if began <= t < ended]


class LoadMonitor(Sampler):
    """The 1-minute load average and host CPU use every 2 s. The run is *noisy* if the load average
    is above 3 at its start or end, or in more than 10% of the samples taken while it ran."""

    def __init__(self) -> None:
        super().__init__(lambda: (os.getloadavg()[0], cpu_times()), period=2.0)
        self.start_load = os.getloadavg()[0]

    def summary(self) -> dict[str, Any]:
        end = os.getloadavg()[0]
        loads = [load for _t, (load, _cpu) in self.samples]
        cpu = [c for _t, (_load, c) in self.samples]
        busy = [
            100.0 * (b[0] - a[0]) / (b[1] - a[1]) for a, b in zip(cpu, cpu[1:], strict=False) if b[1] > a[1]
        ]
        share = sum(s > NOISY_LOAD for s in loads) / len(loads) if loads else 0.0
        ends = ((self.start_load, "start"), (end, "end"))
        reasons = [f"load average {v:.2f} at {when}" for v, when in ends if v > NOISY_LOAD]
        if share > 0.10:
            reasons.append(f"load average above {NOISY_LOAD:g} in {share:.0%} of samples")
        line = f"load average {self.start_load:.2f} at start, {end:.2f} at end"
        line += f", max {max(loads, default=end):.2f}"
        if busy:
            line += f"; host CPU busy {sum(busy) / len(busy):.0f}% on average"
        verdict = "NOISY: " + "; ".join(reasons) if reasons else "not noisy"
        return {"noisy": bool(reasons), "reasons": reasons, "line": f"{line}; {verdict}", "loads": loads}
