"""The four measurements, each with the baseline it is compared with in the same run.

Every wait is a bounded poll or a blocking call with a timeout; every loop is bounded in count.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from bench.services import wait_until

NOOP_TASK = "bench.noop"
ECHO_TASK = "bench.echo"


# -- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linearly interpolated between the closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclasses.dataclass
class Series:
    """Latencies of one operation, in seconds."""

    values: list[float] = dataclasses.field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    def ms(self, q: float) -> float:
        return percentile(self.values, q) * 1000.0

    @property
    def p50_ms(self) -> float:
        return self.ms(50)

    @property
    def p99_ms(self) -> float:
        return self.ms(99)

    @property
    def max_ms(self) -> float:
        return max(self.values) * 1000.0 if self.values else float("nan")


def _blocks(count: int, size: int) -> list[range]:
    return [range(i, min(i + size, count)) for i in range(0, count, size)]


# -- a. start() against a bare publish ------------------------------------------------------------


def start_throughput(tracker: Any, app: Any, queue: str, count: int, prefix: str) -> dict[str, Any]:
    """``tracker.start`` of ``count`` distinct IDs, sequential, against ``app.send_task`` of a no-op
    task carrying the same arguments to the same queue. Alternating blocks, so that drift in the
    machine's load hits both alike. Nothing consumes the queue.
    """

    def send(txid: str) -> None:
        app.send_task(NOOP_TASK, args=[txid], kwargs={"epoch": 1}, queue=queue, serializer="json")

    for i in range(min(10, count)):  # warm-up: connections, producer pool, prepared statements
        tracker.start(f"{prefix}-warm-{i}")
        send(f"{prefix}-warm-{i}")

    starts, sends = Series(), Series()
    start_wall = send_wall = 0.0
    already = 0
    for block in _blocks(count, max(10, count // 5)):
        began = time.perf_counter()
        for i in block:
            t0 = time.perf_counter()
            ref = tracker.start(f"{prefix}-{i}")
            starts.values.append(time.perf_counter() - t0)
            already += ref.already_started
        start_wall += time.perf_counter() - began
        began = time.perf_counter()
        for i in block:
            t0 = time.perf_counter()
            send(f"{prefix}-{i}")
            sends.values.append(time.perf_counter() - t0)
        send_wall += time.perf_counter() - began
    if already:
        raise AssertionError(f"{already} of {count} distinct IDs came back already_started")
    return {
        "count": count,
        "start_per_s": count / start_wall,
        "send_per_s": count / send_wall,
        "start": starts,
        "send": sends,
    }


# -- b. lookup() against a raw SELECT -------------------------------------------------------------


def register(tracker: Any, ids: Sequence[str]) -> None:
    for txid in ids:
        tracker.start(txid)


def lookup_latency(
    tracker: Any, ids: Sequence[str], lookups: int, raw: Callable[[str, str], Any], seed: int = 1
) -> dict[str, Any]:
    """``tracker.lookup`` of random registered IDs against ``raw(kind, txid)``: the same row by its
    unique key with the bare driver. Same IDs in the same order, alternating blocks of 100.
    """
    rng = random.Random(seed)
    order = [rng.choice(ids) for _ in range(lookups)]
    for txid in order[:50]:  # warm-up
        tracker.lookup(txid)
        raw(tracker.kind, txid)
    ours, bare = Series(), Series()
    missing = 0
    for block in _blocks(lookups, 100):
        for i in block:
            t0 = time.perf_counter()
            ref = tracker.lookup(order[i])
            ours.values.append(time.perf_counter() - t0)
            missing += ref is None
        for i in block:
            t0 = time.perf_counter()
            row = raw(tracker.kind, order[i])
            bare.values.append(time.perf_counter() - t0)
            missing += row is None
    if missing:
        raise AssertionError(f"{missing} lookups of registered IDs found nothing")
    return {"lookups": lookups, "ids": len(ids), "lookup": ours, "raw": bare}


# -- c. crash to new incarnation running ----------------------------------------------------------


def start_and_wait_running(tracker: Any, ids: Sequence[str], timeout: float) -> float:
    for txid in ids:
        tracker.start(txid)
    waiting = set(ids)

    def all_running() -> bool:
        for txid in list(waiting):
            ref = tracker.lookup(txid)
            if ref is not None and ref.status == "running":
                waiting.discard(txid)
        return not waiting

    return wait_until(all_running, timeout, interval=0.1, what=f"{len(ids)} trackers running")


def crash_restart(
    tracker: Any, ids: Sequence[str], control_poll: float, timeout: float = 20.0, seed: int = 1
) -> dict[str, Any]:
    """For each running tracker in turn: ``stop(id, reason="crash")`` in a thread, while this one
    polls ``lookup(id)`` every 5 ms until it shows a running incarnation with a new task ID. Two
    figures per tracker, both from the call to ``stop``: when the new incarnation was seen running,
    and when ``stop`` returned (it polls the registry every 50 ms until the old one has exited).
    """
    rng = random.Random(seed)
    stopped, running = Series(), Series()
    for txid in ids:
        # A random pause up to one control poll of the workers: crashes issued back to back would
        # otherwise all land at the same point of the poll cycle (just after the previous one).
        time.sleep(rng.uniform(0, control_poll))
        before = tracker.lookup(txid)
        if before is None or before.status != "running":
            raise AssertionError(f"{txid} is not running before the crash: {before}")
        outcome: dict[str, Any] = {}

        def crash(txid: str = txid, outcome: dict[str, Any] = outcome) -> None:
            try:
                tracker.stop(txid, reason="crash", timeout=timeout)
                outcome["returned"] = time.perf_counter()
            except BaseException as exc:  # re-raised below, in the measuring thread
                outcome["error"] = exc

        after: list[Any] = [None]

        def restarted(
            txid: str = txid,
            old: str = before.task_id,
            box: list[Any] = after,
            outcome: dict[str, Any] = outcome,
        ) -> bool:
            if "error" in outcome:
                raise outcome["error"]
            ref = tracker.lookup(txid)
            box[0] = ref
            return ref is not None and ref.status == "running" and ref.task_id != old

        stopper = threading.Thread(target=crash, name="bench-stop", daemon=True)
        t0 = time.perf_counter()
        stopper.start()
        wait_until(restarted, timeout, interval=0.005, what=f"{txid} running again")
        running.values.append(time.perf_counter() - t0)
        stopper.join(timeout)
        if stopper.is_alive() or "error" in outcome:
            raise outcome.get("error") or TimeoutError(f"stop({txid!r}) did not return")
        stopped.values.append(outcome["returned"] - t0)
        ref = after[0]
        if ref.epoch != before.epoch + 1 or ref.restarts != before.restarts + 1:
            raise AssertionError(f"{txid}: unexpected incarnation after one crash: {before} -> {ref}")
    return {"trackers": len(ids), "stopped": stopped, "running": running}


def stop_all(tracker: Any, ids: Sequence[str], timeout: float = 20.0) -> None:
    for txid in ids:
        tracker.stop(txid, reason="normal", timeout=timeout)


def echo_round_trip(app: Any, queue: str, client: Any, key_prefix: str, timeout: float = 10.0) -> float:
    """Bare Celery: publish a task and wait until a worker runs it (it pushes to a Redis list)."""
    key = f"{key_prefix}echo:{uuid.uuid4().hex}"
    t0 = time.perf_counter()
    app.send_task(ECHO_TASK, args=[key], queue=queue, serializer="json")
    got = client.blpop([key], timeout=timeout)
    elapsed = time.perf_counter() - t0
    client.delete(key)
    if got is None:
        raise TimeoutError(f"no worker ran {ECHO_TASK} within {timeout} s")
    return elapsed


def echo_series(app: Any, queue: str, client: Any, key_prefix: str, count: int) -> Series:
    echo_round_trip(app, queue, client, key_prefix)  # warm-up
    return Series([echo_round_trip(app, queue, client, key_prefix) for _ in range(count)])


# -- d. the embedded broker: filesystem against SQLAlchemy transport ------------------------------


def broker_round_trip(
    url: str,
    transport_options: dict[str, Any],
    count: int,
    polling_interval: float,
    seed: int = 1,
    timeout: float = 10.0,
) -> Series:
    """Publish-to-consume latency through a kombu transport: a consumer thread blocks in
    ``SimpleQueue.get``; the producer sends one message at a time, stamped with the time it was
    sent, and waits (bounded) for it to arrive before the next. ``polling_interval`` is set on both
    transports alike (kombu's SQLAlchemy transport would pass it on to ``create_engine``).
    """
    from kombu import Connection

    warm = 3
    total = count + warm
    latencies: list[float] = []
    received = threading.Event()
    ready = threading.Event()
    errors: list[BaseException] = []
    queue_name = f"bench-round-trip-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout + total * (timeout / 10 + polling_interval * 2)

    def consume() -> None:
        try:
            with Connection(url, transport_options=transport_options) as conn:
                conn.transport.polling_interval = polling_interval
                queue = conn.SimpleQueue(queue_name)
                ready.set()
                while len(latencies) < total and time.monotonic() < deadline:
                    try:
                        message = queue.get(block=True, timeout=1.0)
                    except queue.Empty:
                        continue
                    latencies.append(time.perf_counter() - message.payload["sent"])
                    message.ack()
                    received.set()
                queue.close()
        except BaseException as exc:  # reported by the producer, which is waiting for us
            errors.append(exc)
            ready.set()
            received.set()

    consumer = threading.Thread(target=consume, name="bench-consumer", daemon=True)
    consumer.start()
    rng = random.Random(seed)
    try:
        if not ready.wait(timeout):
            raise TimeoutError("the consumer did not connect")
        with Connection(url, transport_options=transport_options) as conn:
            conn.transport.polling_interval = polling_interval
            queue = conn.SimpleQueue(queue_name)
            for i in range(total):
                if errors:
                    break
                received.clear()
                queue.put({"i": i, "sent": time.perf_counter()}, serializer="json")
                if not received.wait(timeout):
                    raise TimeoutError(f"message {i} was not consumed within {timeout} s")
                # A random pause, so that sends are not phase-locked with the consumer's polling.
                time.sleep(rng.uniform(0, polling_interval))
            queue.close()
    finally:
        consumer.join(timeout=timeout)
    if errors:
        raise errors[0]
    return Series(latencies[warm:])
