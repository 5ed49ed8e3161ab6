"""``tracking check``: Celery settings that are dangerous for long-running trackers."""

from __future__ import annotations

from celery import Celery


def problems(app: Celery) -> list[str]:
    """What is wrong with ``app``'s configuration for trackers, one sentence each."""
    conf = app.conf
    found: list[str] = []
    accept = set(conf.accept_content or [])
    if accept - {"json", "application/json"}:
        found.append(
            f"accept_content {sorted(accept)} accepts more than JSON: "
            "a pickled message from the broker means code execution (CELERYSA-0003)"
        )
    if conf.task_serializer != "json":
        found.append(f"task_serializer is {conf.task_serializer!r}: trackers send JSON only")
    if (conf.worker_prefetch_multiplier or 0) != 1:
        found.append(
            f"worker_prefetch_multiplier is {conf.worker_prefetch_multiplier}: long-running trackers "
            "need 1, or messages wait unacknowledged behind them"
        )
    pool = str(conf.worker_pool or "prefork")
    if pool in ("prefork", "solo") or pool.endswith((".prefork:TaskPool", ".solo:TaskPool")):
        found.append(
            f"worker_pool is {pool!r}: use threads or gevent (prefork caps trackers at the "
            "process count and cannot hand off on warm shutdown; solo blocks broker heartbeats)"
        )
    broker = str(conf.broker_url or "")
    if pool == "threads" and broker.startswith("amqp") and conf.worker_enable_prefetch_count_reduction:
        found.append(
            "worker_enable_prefetch_count_reduction is on with the threads pool and RabbitMQ: after "
            "a broker reconnect a pool thread hangs restoring the prefetch count, and the worker "
            "runs nothing more; set it to False"
        )
    return found
