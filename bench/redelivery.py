"""e.'s baseline: plain Celery's own recovery of a long task when its worker is SIGKILLed.

A long task (``bench.plainapp``: acks_late, reject_on_worker_lost) runs on worker X alone (``-P
prefork -c 1``, prefetch multiplier 1); worker Y starts and proves it consumes; X's process group is
SIGKILLed; the time until the task runs again, on Y, or None if not within ``bound`` seconds.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from celery import Celery

from bench import services
from bench.context import Context
from bench.core import Section, secs
from bench.plainapp import LONG_TASK, WHOAMI_TASK
from bench.replies import ask, wait
from bench.services import AMQP_URL, REDIS_URL, Worker

QUIET = ("--without-mingle", "--without-gossip", "--without-heartbeat")


def _host(answer: bytes | None) -> str:
    """``x@host`` -> ``x``."""
    return json.loads(answer)["hostname"].split("@", 1)[0] if answer else ""


def plain_app(
    ctx: Context, label: str, broker_url: str, options: dict[str, Any]
) -> tuple[Celery, dict[str, str]]:
    """The benchmark's client app and the workers' environment for ``bench.plainapp`` on a broker."""
    transport = dict(options)
    if broker_url.startswith("redis:"):
        transport["global_keyprefix"] = ctx.redis_prefix
    else:
        ctx.on_cleanup(lambda: services.delete_rabbitmq_queue(f"{ctx.base}-celery-{label}"))
    app = Celery(f"bench-plain-{label}", set_as_current=False)
    app.conf.update(broker_url=broker_url, broker_transport_options=transport, task_serializer="json")
    ctx.on_cleanup(app.pool.force_close_all)
    env = {"BENCH_BROKER_URL": broker_url, "BENCH_TRANSPORT_OPTIONS": json.dumps(transport)}
    return app, services.clean_env({**env, "BENCH_REDIS_URL": services.REDIS_URL})


def measure(
    ctx: Context, label: str, broker_url: str, options: dict[str, Any], bound: float
) -> dict[str, Any]:
    """One broker: the seconds from X's SIGKILL until the task runs again on Y (None: not within
    ``bound``)."""
    queue, (app, env) = f"{ctx.base}-celery-{label}", plain_app(ctx, label, broker_url, options)
    reply = f"{ctx.redis_prefix}long:{uuid.uuid4().hex}"
    with ctx.fleet() as fleet:

        def spawn(name: str) -> Worker:
            """A plain worker, once it has proved it consumes the queue."""
            worker = fleet.start(
                name, queue, env, app="bench.plainapp", pool="prefork", concurrency=1, extra_args=QUIET
            )
            got = ask(app, WHOAMI_TASK, queue, ctx.redis, ctx.redis_prefix, timeout=60)
            if _host(got) != worker.name:
                raise AssertionError(f"{WHOAMI_TASK} ran on {got!r}, not on {worker.name}")
            return worker

        x = spawn(f"plain-{label}-x")
        try:
            app.send_task(LONG_TASK, args=[reply, bound + 120], queue=queue, serializer="json")
            got = wait(ctx.redis, reply, 60)
            began = time.monotonic()
            if _host(got) != x.name:
                raise AssertionError(f"the long task did not start on {x.name}: {got!r}")
            spawn(f"plain-{label}-y")
            t0 = time.monotonic()
            x.kill()
            got = wait(ctx.redis, reply, bound)
            elapsed = time.monotonic() - t0
        finally:
            ctx.redis.set(f"{reply}:stop", "1", ex=600)  # the task on Y returns, and Y can stop
    result: dict[str, Any] = {
        "recovered_s": elapsed if got else None,
        "bound_s": bound,
        "ran_before_kill_s": t0 - began,
    }
    if got:
        result.update(worker=_host(got), redelivered_flag=json.loads(got)["redelivered"])
    return {**result, "broker": "RabbitMQ" if broker_url.startswith("amqp") else "Redis", "options": options}


def baselines(ctx: Context, out: Section, bound: float, short: float) -> dict[str, dict[str, Any] | None]:
    """RabbitMQ; Redis with a short visibility timeout and the restore sweep every second (Celery's
    best case on Redis: with kombu's defaults it runs about every 100 s); Redis as it comes."""
    fast = {"visibility_timeout": short, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}
    return {
        "amqp": out.attempt("RabbitMQ", measure, ctx, "amqp", AMQP_URL, {}, max(bound, 10)),
        "redis_short": out.attempt(
            "Redis, short", measure, ctx, "redis-short", REDIS_URL, fast, max(bound, 2 * short + 10)
        ),
        "redis": out.attempt("Redis", measure, ctx, "redis", REDIS_URL, {}, bound),
    }


def figure(res: dict[str, Any] | None) -> str:
    """One broker's figure, as the table shows it."""
    if res is None:
        return "FAILED"
    if res["recovered_s"] is None:
        return f"not running again within {res['bound_s']:g} s"
    if "visibility_timeout" in res["options"]:  # due a visibility timeout after its delivery
        since_delivery = res["recovered_s"] + res["ran_before_kill_s"]
        return f"{secs(res['recovered_s'])} ({secs(since_delivery)} after its delivery)"
    return secs(res["recovered_s"])
