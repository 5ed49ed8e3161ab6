"""h. psycopg under gevent (`bench/geventprobe.py`).

Each probe is a fresh interpreter patched with `celery.maybe_patch_concurrency` for `-P gevent`, as
`celery -A tracking worker -P gevent` does before it imports the app (before anything imports
psycopg); the baseline imported psycopg first. psycopg 3 picks its wait function when
`psycopg.waiting` is imported: its C `wait_c` (a `poll()` that blocks the whole process) unless
gevent has patched `select` by then, in which case `wait_poll` (Python, through the patched
`select.poll`, which yields to other greenlets). Lateness: how late 100 greenlets that sleep 20 ms in
a loop wake up, over 1 s idle and over 1.5 s while another greenlet waits in `SELECT pg_sleep(1)` on
an engine made by `tracking.registry.create_engine`. Pool: 100 greenlets each check a connection
out of that engine and run `SELECT pg_sleep(0.05)` at once.
"""

from __future__ import annotations

from bench.context import Context
from bench.core import Section, ms, section
from bench.services import run_json


def run(ctx: Context) -> Section:
    out = section(__doc__)
    orders = {"celery": "patch first (Celery)", "psycopg-first": "psycopg first"}
    for order in orders:
        out.data[order] = run_json("bench.geventprobe", [order, ctx.pg.url], timeout=180)
    out.columns = (
        "import order", "wait function", "lateness idle: p99 / max",
        "lateness during pg_sleep(1): p99 / max", "100 x pg_sleep(0.05): wall",
        "peak connections (pool + overflow)", "checkout wait p50 / max", "failed",
    )  # fmt: skip
    for order, label in orders.items():
        d = out.data[order]
        idle, busy, c, pool = d["idle"], d["during_pg_sleep"], d["concurrent"], d["pool"]
        out.rows.append(
            [
                label, f"`{d['wait_function']}`", f"{ms(idle['p99_ms'])} / {ms(idle['max_ms'])}",
                f"{ms(busy['p99_ms'])} / {ms(busy['max_ms'])}", f"{c['wall_s']:.2f} s",
                f"{c['peak_connections']} ({pool['size']} + {pool['overflow']})",
                f"{ms(c['checkout_wait_p50_ms'])} / {ms(c['checkout_wait_max_ms'])}", str(c["failures"]),
            ]
        )  # fmt: skip
    ours, first = (out.data[o]["concurrent"]["wall_s"] for o in orders)
    out.blocks.append(
        f"The pool, patched first as Celery does: {first / ours:.0f}x faster than psycopg first."
    )
    return out
