"""What the figures were measured on, and how busy the machine was meanwhile."""

from __future__ import annotations

import os
import platform
import subprocess
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

NOISY_LOAD = 3.0


def _meminfo_total() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    kib = int(line.split()[1])
                    return f"{kib / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _git_revision() -> str:
    """The commit the package was measured at, and whether ``tracking/`` differed from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--", "tracking")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not commit:
        return "unknown"
    return f"{commit}" + (" with uncommitted changes in tracking/" if changed else "")


def describe(servers: dict[str, str]) -> dict[str, Any]:
    """The machine, the libraries and the servers, as recorded next to the figures."""
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory": _meminfo_total(),
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": platform.python_version(),
        "tracking": _version("tracking"),
        "revision": _git_revision(),
        "celery": _version("celery"),
        "kombu": _version("kombu"),
        "sqlalchemy": _version("sqlalchemy"),
        "psycopg": _version("psycopg"),
        "redis-py": _version("redis"),
        **servers,
    }


#: jiffies per second (the unit of /proc CPU times)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def group_usage(pgid: int) -> tuple[int, float]:
    """(VmRSS KiB, CPU seconds) summed over every process in the process group ``pgid``."""
    rss, cpu = 0, 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # after "pid (comm)": state, ppid, pgrp
                continue
            cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                        break
        except (OSError, IndexError, ValueError):
            continue  # the process exited meanwhile
    return rss, cpu


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


class LoadMonitor:
    """Samples the 1-minute load average and host CPU use every ``interval`` seconds.

    The run is *noisy* if the load average is above 3 at the start or the end, or in more than 10%
    of the samples taken during the run (the validity guard of RELIABILITY.md, on load).
    """

    def __init__(self, interval: float = 2.0, max_samples: int = 10_000) -> None:
        self.interval = interval
        self.max_samples = max_samples
        self.start_load = os.getloadavg()
        self.end_load: tuple[float, float, float] | None = None
        self.samples: list[float] = []
        self.cpu_busy: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-load", daemon=True)

    def __enter__(self) -> LoadMonitor:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 1)
        self.end_load = os.getloadavg()

    def _run(self) -> None:
        last = cpu_times()
        while len(self.samples) < self.max_samples and not self._stop.wait(self.interval):
            self.samples.append(os.getloadavg()[0])
            now = cpu_times()
            if last is not None and now is not None and now[1] > last[1]:
                self.cpu_busy.append(100.0 * (now[0] - last[0]) / (now[1] - last[1]))
            last = now

    def summary(self) -> dict[str, Any]:
        end = self.end_load or os.getloadavg()
        over = sum(1 for s in self.samples if s > NOISY_LOAD)
        share = over / len(self.samples) if self.samples else 0.0
        reasons = []
        if self.start_load[0] > NOISY_LOAD:
            reasons.append(f"load average {self.start_load[0]:.2f} at start")
        if end[0] > NOISY_LOAD:
            reasons.append(f"load average {end[0]:.2f} at end")
        if share > 0.10:
            reasons.append(f"load average above {NOISY_LOAD:g} in {share:.0%} of samples")
        busy = self.cpu_busy
        return {
            "load_start": self.start_load,
            "load_end": end,
            "load_max": max(self.samples, default=self.start_load[0]),
            "load_over_share": share,
            "cpu_busy_mean": sum(busy) / len(busy) if busy else None,
            "cpu_busy_over_85_share": (sum(1 for b in busy if b > 85) / len(busy)) if busy else None,
            "samples": len(self.samples),
            "noisy": bool(reasons),
            "noisy_reasons": reasons,
        }
