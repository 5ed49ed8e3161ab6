"""JSON only on the wire, and passwords never in logs or errors (real worker, PostgreSQL + Redis)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from kombu.connection import Connection
from kombu.entity import Exchange
from kombu.messaging import Producer

import tracking
from tests.harness import Cluster, Stack, wait_for
from tests.integration.trackers import Counter, Crasher
from tracking import registry

CANARY = "canary-5f0e1d"


#: PostgreSQL + Redis, the database URL with a password (a role of the module's own)
pytestmark = pytest.mark.stacks("postgres-redis", password=CANARY)


class Explode:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "pwned"))


def test_a_pickled_tracker_message_is_refused_and_never_run(stack: Stack, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with Cluster(stack) as cluster:
        cluster.worker("w1")
        body = pickle.dumps(([Explode(marker)], {"epoch": 1}, {}))
        # kombu's Connection, Producer and Exchange are unannotated.
        with Connection(stack.broker_url, transport_options=stack.transport_options()) as conn:  # type: ignore[no-untyped-call]
            producer = Producer(conn)  # type: ignore[no-untyped-call]
            producer.publish(  # type: ignore[no-untyped-call]
                body,
                routing_key=stack.queue,
                exchange=Exchange(stack.queue, type="direct"),  # type: ignore[no-untyped-call]
                declare=[],
                content_type="application/x-python-serialize",
                content_encoding="binary",
                headers={
                    "task": "tracking.Counter",
                    "id": "pickled-1",
                    "lang": "py",
                    "argsrepr": "",
                    "kwargsrepr": "",
                },
            )
        wait_for(lambda: "ContentDisallowed" in cluster.log("w1"), what="the worker to refuse the message")
        assert not marker.exists()


def test_no_password_reaches_worker_logs_errors_or_refs(stack: Stack, txid: str) -> None:
    settings = stack.settings()
    with Cluster(stack) as cluster:
        cluster.worker("w1")
        Crasher.start(txid)
        wait_for(lambda: Crasher.lookup(txid) is None, timeout=60, what="the crasher to be dead")
        Counter.start(txid)
        wait_for(lambda: Counter.lookup(txid) is not None)
        assert CANARY not in repr(settings) and CANARY not in repr(Counter.lookup(txid))
        broken = tracking.Settings(
            database_url=settings.database_url.replace("127.0.0.1:5432", "127.0.0.1:1")
        )
        with pytest.raises(tracking.RegistryUnavailable) as info:
            registry.get(broken, "Counter", txid)
        assert CANARY not in str(info.value) and CANARY not in repr(info.value)
        Counter.stop(txid)
    assert CANARY not in cluster.log("w1"), "a password reached the worker's log"
