"""Workers with long Celery hostnames can hold a lease and run trackers, on SQLite and PostgreSQL.

A worker ID is ``f"{hostname}/{pid}/{12 hex}"`` (``worker.lease.Lease.register``). PostgreSQL enforces
column lengths (SQLite does not): with the worker-ID columns at 64 characters, a worker named like a
default Celery node on EC2 could never register its lease, so it could never run a tracker.
"""

from __future__ import annotations

import uuid

import pytest

from tracking import registry, supervisor
from tracking.policy import RestartPolicy
from tracking.settings import Settings
from tracking.worker.lease import Lease

KIND = "long-hostnames"
POLICY = RestartPolicy(max_restarts=1000, max_seconds=60, backoff=300, backoff_max=600)

#: the default Celery node name of a worker on an EC2 instance (a 69-character worker ID)
EC2_NODE = "celery@ip-172-31-22-101.eu-central-1.compute.internal"
#: the longest hostname the registry accepts (DNS: 255 octets), as a Celery node name
LONGEST_NODE = "celery@" + ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 56])
#: the largest PID Linux hands out (pid_max is at most 2**22)
PID_MAX = 4_194_304

assert len(LONGEST_NODE) == 255


def worker_id_of(hostname: str, pid: int) -> str:
    """A worker ID, as ``worker.lease.Lease.register`` makes it."""
    return f"{hostname}/{pid}/{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("hostname", [EC2_NODE, LONGEST_NODE], ids=["ec2-node", "255-chars"])
def test_a_worker_with_a_long_hostname_registers_claims_and_hands_off(
    registry_settings: Settings, hostname: str
) -> None:
    txid = f"txn-{uuid.uuid4().hex[:12]}"
    worker_id = worker_id_of(hostname, PID_MAX)
    assert len(worker_id) > 64

    registry.register_worker(registry_settings, worker_id, hostname, PID_MAX)
    assert registry.renew_worker(registry_settings, worker_id)
    row, created = registry.start(registry_settings, KIND, txid, {}, POLICY)
    assert created
    running = registry.claim(
        registry_settings, KIND, txid, row.epoch, worker=hostname, worker_id=worker_id, policy=POLICY
    )
    assert running is not None
    assert (running.status, running.worker, running.worker_id) == ("running", hostname, worker_id)

    # a handoff records an event naming the worker's hostname
    handed = registry.hand_off(registry_settings, [(running.id, running.epoch)], f"{hostname} leaving")
    assert [r.status for r in handed] == ["pending"]
    registry.retire_worker(registry_settings, worker_id)


def test_the_runtime_registers_a_worker_with_the_longest_hostname(registry_settings: Settings) -> None:
    lease = Lease(registry_settings, LONGEST_NODE, PID_MAX)
    lease.register()
    assert lease.worker_id.startswith(f"{LONGEST_NODE}/")
    assert lease.valid()
    assert lease.renew()
    lease.retire()


def test_a_supervisor_named_after_the_longest_hostname_records_its_sweep(registry_settings: Settings) -> None:
    # a supervisor's default name is f"{hostname}/{pid}"
    name = f"{'h' * 255}/{PID_MAX}"
    supervisor.sweep(registry_settings, lambda _row: None, name=name)
    assert name in {s.name for s in registry.last_sweeps(registry_settings)}
