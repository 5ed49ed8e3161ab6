"""d. The embedded broker against kombu's SQLAlchemy transport.

{count} messages, one at a time, from a producer to a consumer thread blocked in
`SimpleQueue.get`, through the embedded broker (`embedded://`, kombu's filesystem transport with
atomic writes, configured by `tracking.celery.embedded_broker_options`) and through kombu's
SQLAlchemy transport on SQLite (`sqla+sqlite:///<temp folder>/kombu.sqlite3`), both polling every
{polling:g} s; a random pause up to one polling interval between messages keeps them out of phase
with the polling.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

from kombu.connection import Connection

from bench.context import Context
from bench.core import Section, Series, lat, section
from tracking.celery import embedded_broker_options

POLLING = 0.1  # the embedded broker's, from tracking.celery.embedded_broker_options
WARM = 3


def round_trips(url: str, options: dict[str, Any], count: int, timeout: float = 10.0) -> Series:
    """Publish-to-consume latency: the producer sends one message at a time, stamped with the time it
    was sent, and waits (bounded) for it to arrive before the next."""
    latencies = Series()
    received, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    name = f"bench-round-trip-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout + (count + WARM) * (timeout / 10 + POLLING * 2)

    def connect() -> Any:
        conn = Connection(url, transport_options=options)  # type: ignore[no-untyped-call]
        conn.transport.polling_interval = POLLING  # both alike (sqla would pass it to create_engine)
        return conn

    def consume() -> None:
        try:
            with connect() as conn, conn.SimpleQueue(name) as queue:
                ready.set()
                while len(latencies) < count + WARM and time.monotonic() < deadline:
                    try:
                        message = queue.get(block=True, timeout=1.0)
                    except queue.Empty:
                        continue
                    latencies.append(time.perf_counter() - message.payload["sent"])
                    message.ack()
                    received.set()
        except BaseException as exc:  # reported by the producer, which is waiting for us
            errors.append(exc)
            ready.set()
            received.set()

    consumer = threading.Thread(target=consume, name="bench-consumer", daemon=True)
    consumer.start()
    rng = random.Random(1)
    try:
        if not ready.wait(timeout):
            raise TimeoutError("the consumer did not connect")
        with connect() as conn, conn.SimpleQueue(name) as queue:
            for i in range(count + WARM):
                if errors:
                    break
                received.clear()
                queue.put({"i": i, "sent": time.perf_counter()}, serializer="json")
                if not received.wait(timeout):
                    raise TimeoutError(f"message {i} was not consumed within {timeout} s")
                time.sleep(rng.uniform(0, POLLING))  # not phase-locked with the consumer's polling
    finally:
        consumer.join(timeout=timeout)
    if errors:
        raise errors[0]
    return Series(latencies[WARM:])


def run(ctx: Context) -> Section:
    count = ctx.pick(200, 10)
    out = section(__doc__, count=count, polling=POLLING)
    fs = out.attempt(
        "embedded", lambda: round_trips("embedded://", embedded_broker_options(str(ctx.tmp / "fs")), count)
    )
    sqla = out.attempt("sqla", lambda: round_trips(f"sqla+sqlite:///{ctx.tmp / 'kombu.sqlite3'}", {}, count))
    out.data = {"embedded": fs, "sqla": sqla}
    out.rows.append(
        [
            f"embedded broker round trip, {count} messages",
            f"embedded {lat(fs)}" if fs else "FAILED",
            f"sqla+sqlite {lat(sqla)}" if sqla else "FAILED",
            f"{fs.p50_ms / sqla.p50_ms:.2f}x at p50" if fs and sqla else "",
        ]
    )
    return out
