"""How the benchmark's tasks answer it: they push to a Redis list it waits on with BLPOP.

Worker side: :func:`push`, :func:`worker_client` (Redis at ``BENCH_REDIS_URL``, which the
benchmark sets; loopback only). Benchmark side: :func:`ask` sends a task and waits for its answer;
:func:`wait` waits for one.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

import redis

_client: redis.Redis | None = None
_lock = threading.Lock()


def worker_client() -> redis.Redis:
    """Worker side: the process's one client."""
    global _client
    with _lock:
        if _client is None:
            _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        return _client


def push(key: str, value: str, ttl: int = 600) -> None:
    """Worker side: answer on ``key``."""
    worker_client().rpush(key, value)
    worker_client().expire(key, ttl)


def wait(client: redis.Redis, key: str, timeout: float) -> bytes | None:
    """The first answer on ``key`` within ``timeout`` seconds, or None. BLPOP in blocks of at most
    1 s (redis-py's socket timeout is 5 s); returns at once when an answer arrives."""
    deadline = time.monotonic() + timeout
    for _block in range(int(timeout) + 2):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        got: Any = client.blpop([key], timeout=min(1.0, max(left, 0.01)))
        if got is not None:
            return bytes(got[1])
    return None


def ask(
    app: Any, task: str, queue: str | None, client: redis.Redis, prefix: str, timeout: float = 10.0
) -> bytes:
    """Send ``task`` (its first argument: the key to answer on) and wait for its answer."""
    key = f"{prefix}reply:{uuid.uuid4().hex}"
    app.send_task(task, args=[key], queue=queue, serializer="json")
    got = wait(client, key, timeout)
    client.delete(key)
    if got is None:
        raise TimeoutError(f"no worker ran {task} within {timeout} s")
    return got
