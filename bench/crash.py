"""c. A crash to the new incarnation running (PostgreSQL + Redis).

{trackers} trackers (interval {interval:g} s) run on {workers} worker subprocess(es), `celery -A
tracking worker -P threads -c 50`. For each in turn, after a random pause of up to one control
poll, the time from calling `stop(id, reason="crash")` (in a thread) until `lookup(id)`, polled
every 5 ms, shows status running with a new task ID. The worker notices the stop request on its
next control poll (every {control_poll:g} s), the tracker exits abnormally and is republished at
once (the first restart has no backoff), and a worker claims it. `stop` itself returns once it has
seen the old incarnation exit. The baseline is bare Celery: `send_task` of a task until a worker
runs it (the task pushes to a Redis list the benchmark waits on), {echoes} times. With one crash
per tracker no restart intensity is reached. Goal: p50 under 1 s.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from bench.context import Context, start_running
from bench.core import Section, Series, lat, met, ms, section
from bench.services import wait_until
from bench.trackers import CrashBench

GOAL_P50_MS = 1000.0


def crash_one(txid: str, stopped: Series, restarted: Series, timeout: float = 20.0) -> None:
    """``stop(txid, reason="crash")`` in a thread, while this one polls ``lookup`` every 5 ms until a
    new incarnation runs; both durations from the call to ``stop``."""
    before = CrashBench.lookup(txid)
    if before is None or before.status != "running":
        raise AssertionError(f"{txid} is not running before the crash: {before}")
    outcome: dict[str, Any] = {}

    def crash() -> None:
        try:
            CrashBench.stop(txid, reason="crash", timeout=timeout)
            outcome["returned"] = time.perf_counter()
        except BaseException as exc:  # re-raised below, in the measuring thread
            outcome["error"] = exc

    def again() -> bool:
        if "error" in outcome:
            raise outcome["error"]
        outcome["ref"] = ref = CrashBench.lookup(txid)
        return ref is not None and ref.status == "running" and ref.task_id != before.task_id

    stopper = threading.Thread(target=crash, name="bench-stop", daemon=True)
    t0 = time.perf_counter()
    stopper.start()
    wait_until(again, timeout, interval=0.005, what=f"{txid} running again")
    restarted.append(time.perf_counter() - t0)
    stopper.join(timeout)
    if stopper.is_alive() or "error" in outcome:
        raise outcome.get("error") or TimeoutError(f"stop({txid!r}) did not return")
    stopped.append(outcome["returned"] - t0)
    ref = outcome["ref"]
    if ref.epoch != before.epoch + 1 or ref.restarts != before.restarts + 1:
        raise AssertionError(f"{txid}: unexpected incarnation after one crash: {before} -> {ref}")


def run(ctx: Context) -> Section:
    count, workers = ctx.pick(30, 3), ctx.pick(2, 1)
    settings = ctx.settings("work")
    poll = settings.control_poll_seconds
    out = section(
        __doc__,
        trackers=count,
        interval=CrashBench.interval,
        workers=workers,
        echoes=count,
        control_poll=poll,
    )
    app = ctx.app("crash", settings)
    ids = [f"crash-{i}" for i in range(count)]
    stopped, restarted = Series(), Series()
    rng = random.Random(1)
    with ctx.fleet() as fleet:
        ctx.workers(fleet, [f"crash{i + 1}" for i in range(workers)], settings)
        ctx.echo(app, settings.queue, timeout=30)  # warm-up
        echo = Series(ctx.echo(app, settings.queue) for _ in range(count))
        start_running(CrashBench, ids)
        for txid in ids:
            # crashes issued back to back would all land at the same point of the poll cycle
            time.sleep(rng.uniform(0, poll))
            crash_one(txid, stopped, restarted)
        for txid in ids:
            CrashBench.stop(txid, timeout=20)
    problems = fleet.problems()  # the workers have exited (warm shutdown)
    out.data = {"running": restarted, "stopped": stopped, "echo": echo, "worker_log_problems": problems}
    goal = met(restarted.p50_ms < GOAL_P50_MS)
    out.rows = [
        [
            f"crash -> new incarnation running, N={count}",
            f"{lat(restarted)}, max {ms(restarted.max_ms)} (goal p50 < 1 s: {goal})",
            f"send_task -> task running {lat(echo)}",
            f"{restarted.p50_ms / echo.p50_ms:.1f}x at p50",
        ],
        [
            "... of which stop(reason='crash') returned",
            f"{lat(stopped)}, max {ms(stopped.max_ms)}",
            f"worker log: {len(problems)} error line(s)",
            "",
        ],
    ]
    return out
