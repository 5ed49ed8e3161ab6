"""``tracking demo``: about fifty trackers against a simulated slow, flaky ledger, on the embedded
default (SQLite + embedded broker), with a real worker and beat as child processes.

The ledger confirms each transaction at its own pace (a few seconds per confirmation, drawn from
the transaction ID) and fails now and then; the demo also crashes a few trackers on purpose. It
shows the trackers' progress live and ends with a summary: confirmed, restarts, lost, duplicates.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import tracking
from tracking import registry
from tracking.models import Status

REQUIRED_CONFIRMATIONS = 6


class LedgerUnavailable(Exception):
    """The simulated ledger failed to answer (it does, now and then)."""


class DemoTracker(tracking.Tracker):
    """Follows one simulated transaction until it has enough confirmations."""

    kind = "demo"
    interval = 0.5
    max_restarts, max_seconds = 5, 10
    backoff, backoff_max = 0.2, 1.0

    def init(self, transaction_id: str, **args: Any) -> dict[str, Any]:
        return {"confirmations": 0, "first_seen": time.time(), "polls": 0}

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        state["polls"] += 1
        state["confirmations"] = ledger_confirmations(self.transaction_id, state["first_seen"])
        if state["confirmations"] >= REQUIRED_CONFIRMATIONS:
            raise tracking.Done(state)
        return state


def ledger_confirmations(transaction_id: str, first_seen: float) -> int:
    """The simulated ledger: slow (0.5 to 2 s per confirmation) and flaky (2% of polls fail)."""
    if random.random() < 0.02:
        raise LedgerUnavailable(f"ledger timed out for {transaction_id}")
    digest = hashlib.sha256(transaction_id.encode()).digest()
    seconds_per_confirmation = 0.5 + digest[0] / 255 * 1.5
    return min(REQUIRED_CONFIRMATIONS, int((time.time() - first_seen) / seconds_per_confirmation))


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKING_", "CELERY_"))}
    env.update(
        TRACKING_DATABASE_URL=f"sqlite:///{folder / 'demo.sqlite3'}",
        CELERY_BROKER_URL="embedded://localhost//",
        TRACKING_BROKER_FOLDER=str(folder / "broker"),
        TRACKING_IMPORTS="tracking.demo",
        TRACKING_HEARTBEAT_SECONDS="0.5",
        TRACKING_LEASE_SECONDS="3",
        TRACKING_SWEEP_SECONDS="1",
        TRACKING_START_GRACE_SECONDS="3",
    )
    return env


def _spawn(args: list[str], folder: Path, name: str) -> subprocess.Popen[bytes]:
    log = open(folder / f"{name}.log", "wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tracking", *args],
            cwd=folder,
            env=_env(folder),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def run(
    count: int = 50, crashes: int = 5, seconds: float = 50.0, out: TextIO = sys.stdout, keep: bool = False
) -> dict[str, int]:
    """Run the demo; returns the summary counts."""
    folder = Path(tempfile.mkdtemp(prefix="tracking-demo-"))
    env = _env(folder)
    settings = tracking.Settings.from_env(env)
    from celery import Celery

    from tracking.celery import recommended_config

    app = Celery("tracking-demo", set_as_current=False)
    app.conf.update(recommended_config(settings))
    tracking.install(app, settings)
    procs: list[subprocess.Popen[bytes]] = []
    ids = [f"0xdemo{i:03d}{random.randrange(16**8):08x}" for i in range(count)]
    try:
        registry.migrate(settings)
        procs.append(
            _spawn(
                ["worker", "-P", "threads", "-c", str(count + 20), "-l", "warning", "--hostname", "demo@%h"],
                folder,
                "worker",
            )
        )
        procs.append(_spawn(["beat", "-l", "warning", "-s", str(folder / "beat-schedule")], folder, "beat"))
        print(
            f"tracking demo: {count} trackers on a simulated ledger (embedded SQLite + embedded broker)",
            file=out,
        )
        for txid in ids:
            DemoTracker.start(txid)
        _follow(count, crashes, seconds, out)
        summary = _summary(settings, ids)
        print(
            f"summary: confirmed {summary['confirmed']}/{count}, restarts {summary['restarts']}, "
            f"still running {summary['unfinished']}, dead {summary['dead']}, "
            f"lost {summary['lost']}, duplicates {summary['duplicates']}",
            file=out,
        )
        return summary
    finally:
        for proc in procs:
            _stop(proc)
        registry.dispose(settings)
        if keep:
            print(f"demo files kept in {folder}", file=out)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _follow(count: int, crashes: int, seconds: float, out: TextIO) -> None:
    """Show the trackers' progress every second until none is left or ``seconds`` are over; once
    ``crashes`` of them run, crash that many on purpose."""
    crashed: set[str] = set()
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        refs = {r.transaction_id: r for r in DemoTracker.list()}
        running = [t for t, r in refs.items() if r.status is Status.RUNNING]
        if len(crashed) < crashes and len(running) >= crashes:
            for txid in running[:crashes]:
                if txid not in crashed:
                    DemoTracker.stop(txid, reason="demo_crash", timeout=5)
                    crashed.add(txid)
            print(f"  crashed {len(crashed)} trackers on purpose: they come back with their state", file=out)
        statuses = Counter(r.status for r in refs.values())
        restarts = sum(r.restarts for r in refs.values())
        done = count - len(refs)
        print(
            f"  t={time.monotonic() - started:4.1f}s  confirmed {done:3d}/{count}  "
            f"running {statuses[Status.RUNNING]:3d}  pending {statuses[Status.PENDING]:3d}  "
            f"failed {statuses[Status.FAILED]:3d}  dead {statuses[Status.DEAD]:3d}  "
            f"restarts (live) {restarts}",
            file=out,
            flush=True,
        )
        if not refs:
            break
        time.sleep(1.0)


def _summary(settings: tracking.Settings, ids: list[str]) -> dict[str, int]:
    confirmed = duplicates = restarts = lost = dead = unfinished = 0
    for txid in ids:
        events = registry.history(settings, DemoTracker.kind, txid, limit=200)
        dones = sum(1 for e in events if e.event == "done")
        names = [e.event for e in events]
        # A delayed restart records "backoff", then "restarting" when it is due: count it once.
        restarts += sum(
            1
            for i, name in enumerate(names)
            if name == "backoff" or (name == "restarting" and (i == 0 or names[i - 1] != "backoff"))
        )
        row = registry.get(settings, DemoTracker.kind, txid)
        confirmed += dones >= 1
        duplicates += max(0, dones - 1)
        if row is not None and row.status is Status.DEAD:
            dead += 1
        elif row is not None:
            unfinished += 1
        elif dones == 0:
            lost += 1  # gone from the registry without having finished
    return {
        "confirmed": confirmed,
        "restarts": restarts,
        "lost": lost,
        "duplicates": duplicates,
        "dead": dead,
        "unfinished": unfinished,
    }
