"""What psycopg does under gevent, measured in a process patched the way Celery's gevent pool is.

Run as a subprocess by section h. (``bench.gevent``): ``python -m bench.geventprobe <order> <URL>``, with
``order`` one of

- ``celery``: ``celery.maybe_patch_concurrency`` with ``-P gevent`` first (what ``celery -A tracking
  worker -P gevent`` does before it imports the app), then psycopg and the registry's engine;
- ``psycopg-first``: psycopg imported *before* the patch (an app that imports its database layer
  before gevent patches), the baseline that shows what a non-cooperative wait does.

It prints one JSON object: the wait function psycopg chose, the lateness of 100 greenlets that
sleep 20 ms in a loop, with nothing else running and while one greenlet waits in ``SELECT
pg_sleep(1)`` on a connection of ``tracking.registry.create_engine`` (the registry's own engine
settings), and the queueing of 100 greenlets that each run ``SELECT pg_sleep(0.05)`` on that engine
at once (its pool is the registry's: how many connections, how long a checkout waits).
"""

from __future__ import annotations

import json
import sys
from typing import Any

ORDER = sys.argv[1] if len(sys.argv) > 1 else "celery"
if ORDER == "psycopg-first":
    import psycopg  # chooses its wait function now, before the patch

from celery import maybe_patch_concurrency  # noqa: E402

maybe_patch_concurrency(["celery", "worker", "-P", "gevent"])

import time  # noqa: E402

import gevent  # type: ignore[import-untyped]  # noqa: E402
import gevent.monkey  # type: ignore[import-untyped]  # noqa: E402
import psycopg.waiting  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.core import percentile  # noqa: E402
from tracking import registry  # noqa: E402

TICKERS = 100
TICK = 0.02
SLEEPERS = 100
SLEEP = 0.05


def tick_lateness(seconds: float, during: Any = None) -> dict[str, Any]:
    """Lateness of ``TICKERS`` greenlets sleeping ``TICK`` s in a loop for ``seconds``."""
    late: list[float] = []
    stop_at = time.monotonic() + seconds

    def ticker() -> None:
        for _ in range(int(seconds / TICK) + 2):  # bounded
            due = time.monotonic() + TICK
            gevent.sleep(TICK)
            late.append(time.monotonic() - due)
            if time.monotonic() >= stop_at:
                return

    jobs = [gevent.spawn(ticker) for _ in range(TICKERS)]
    extra = gevent.spawn(during) if during is not None else None
    gevent.joinall(jobs, timeout=seconds + 30)
    if extra is not None:
        extra.join(timeout=30)
    return {
        "ticks": len(late),
        "p50_ms": percentile(late, 50) * 1000,
        "p99_ms": percentile(late, 99) * 1000,
        "max_ms": max(late) * 1000 if late else float("nan"),
    }


def main() -> None:
    url = sys.argv[2]
    engine = registry.create_engine(url)
    pool: Any = engine.pool  # a QueuePool: size() and checkedout() are not on the base class
    with engine.connect() as conn:  # warm: one connection open, the dialect initialised
        conn.execute(sa.text("SELECT 1"))
    out: dict[str, Any] = {
        "order": ORDER,
        "wait_function": getattr(psycopg.waiting.wait, "__name__", "?"),
        "select_patched": gevent.monkey.is_module_patched("select"),
        "pool": {"class": type(engine.pool).__name__, "size": pool.size(), "overflow": 20},
    }
    out["idle"] = tick_lateness(1.0)

    slow: dict[str, float] = {}

    def slow_query() -> None:
        t0 = time.monotonic()
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_sleep(1)"))
        slow["seconds"] = time.monotonic() - t0

    out["during_pg_sleep"] = tick_lateness(1.5, slow_query)
    out["pg_sleep_s"] = slow.get("seconds")

    waits: list[float] = []
    peak = [0]

    def sleeper() -> None:
        t0 = time.monotonic()
        with engine.connect() as conn:
            waits.append(time.monotonic() - t0)
            peak[0] = max(peak[0], pool.checkedout())
            conn.execute(sa.text(f"SELECT pg_sleep({SLEEP})"))

    t0 = time.monotonic()
    jobs = [gevent.spawn(sleeper) for _ in range(SLEEPERS)]
    gevent.joinall(jobs, timeout=120)
    failed = [repr(j.exception) for j in jobs if j.exception is not None]
    out["concurrent"] = {
        "greenlets": SLEEPERS,
        "sleep_s": SLEEP,
        "wall_s": time.monotonic() - t0,
        "peak_connections": peak[0],
        "checkout_wait_p50_ms": percentile(waits, 50) * 1000,
        "checkout_wait_max_ms": max(waits) * 1000 if waits else float("nan"),
        "failed": failed[:3],
        "failures": len(failed),
    }
    engine.dispose()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
