"""j. A peer in the same run: Ray named detached actors, side by side with trackers.

Run by section j. (``bench.ray``) in a subprocess of its own (Ray is heavy to import and owns many processes):
``python -m bench.raypeer <actors> <lookups> <calls> <kills> <temp folder>``; it prints one JSON
object. Ray runs local-only: ``ray.init(address="local")`` on 127.0.0.1, no dashboard, usage
statistics off, a small object store, its session files in the given temporary folder; every actor
is killed and Ray shut down at the end.

- create: N named detached actors (``lifetime="detached"``, ``max_restarts=-1``, ``num_cpus=0``),
  created one after another; the time from the first creation until every one has answered a call;
- ``ray.get_actor(name)`` latency of random names (the peer of ``lookup``);
- an actor method call round trip, ``ray.get(handle.ping.remote(i))`` (the peer of ``call``);
- recovery after SIGKILL of an actor's worker process: the time from the kill until the actor
  (same name, restarted by Ray in a new process) answers a call again (the peer of crash ->
  restart);
- memory: VmRSS and Pss (``/proc/<pid>/smaps_rollup``) of each actor's process, summed and divided
  by N; and the RSS of Ray's own processes (GCS, raylet, ...), which every node pays once.

Every wait is bounded in time; every loop in count.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import time
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine

import ray  # type: ignore[import-not-found, unused-ignore]

from bench.core import Series
from bench.machine import descendants, pss_kib, status_kib

NAMESPACE = "tracking-bench"


@ray.remote(max_restarts=-1, num_cpus=0)
class Peer:
    """A named detached actor: the peer of a tracker."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def ping(self, message: Any) -> Any:
        self.calls += 1
        return message

    def pid(self) -> int:
        return os.getpid()


def _call_until_answered(handle: Any, old_pid: int, timeout: float) -> float:
    """Call the actor until it answers from a new process; seconds from now."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    for _attempt in range(int(timeout / 0.005) + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            pid = ray.get(handle.pid.remote(), timeout=min(5.0, left))
            if pid != old_pid:
                return time.monotonic() - t0
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        time.sleep(0.005)
    raise TimeoutError(f"the actor did not answer again within {timeout} s of the kill")


def create(names: list[str]) -> dict[str, Any]:
    """The actors, one after another; the time until every one has answered, and their memory."""
    t0 = time.monotonic()
    handles = [Peer.options(name=name, lifetime="detached").remote(name) for name in names]  # type: ignore[attr-defined]
    pids = ray.get([h.pid.remote() for h in handles], timeout=60 + len(names) * 5)
    created = time.monotonic() - t0
    ray_own = [p for p in descendants(os.getpid()) if p not in set(pids)]
    memory = {
        "actor_rss_kib": sum(status_kib(pid) for pid in pids) / len(pids),
        "actor_pss_kib": sum(pss_kib(pid) for pid in pids) / len(pids),
        "ray_processes": len(ray_own),
        "ray_rss_kib": sum(status_kib(p) for p in ray_own),
        "driver_rss_kib": status_kib(os.getpid()),
    }
    return {"create_s": created, "memory": memory}


def latencies(names: list[str], lookups: int, calls: int, kills: int) -> dict[str, Any]:
    """``ray.get_actor`` of random names; method calls to one actor; SIGKILLs, each until the actor
    answers again."""
    rng = random.Random(1)
    for name in names[:10]:  # warm-up
        ray.get_actor(name)
    gets, rtt = Series(), Series()
    for name in [rng.choice(names) for _ in range(lookups)]:
        gets.time(ray.get_actor, name)
    handle = ray.get_actor(names[0])
    for i in range(10):  # warm-up
        ray.get(handle.ping.remote(i), timeout=30)
    for i in range(calls):
        if rtt.time(lambda: ray.get(handle.ping.remote(i), timeout=30)) != i:  # noqa: B023
            raise AssertionError("the actor answered something else")
    recovered = []
    for k in range(kills):
        victim = ray.get_actor(names[k % len(names)])
        pid = ray.get(victim.pid.remote(), timeout=30)
        os.kill(pid, signal.SIGKILL)
        recovered.append(_call_until_answered(victim, pid, timeout=120))
    return {"get_actor": gets, "call": rtt, "recovered": recovered}


def main() -> None:
    actors, lookups, calls, kills = (int(x) for x in sys.argv[1:5])
    temp = sys.argv[5]
    began = time.monotonic()
    ray.init(
        address="local",
        include_dashboard=False,
        num_cpus=os.cpu_count() or 1,
        object_store_memory=80 * 1024 * 1024,
        _temp_dir=temp,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        namespace=NAMESPACE,
    )
    out: dict[str, Any] = {"ray": ray.__version__, "init_s": time.monotonic() - began, "actors": actors}
    names = [f"peer-{i}" for i in range(actors)]
    try:
        out.update(create(names))
        out.update(latencies(names, lookups, calls, kills))
    finally:
        for name in names:
            try:
                ray.kill(ray.get_actor(name), no_restart=True)
            except Exception:  # not created, or gone already: nothing to kill
                continue
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
