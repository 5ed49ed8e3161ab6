"""j. A peer in the same run: Ray named detached actors, side by side with trackers.

Run by the benchmark in a subprocess of its own (Ray is heavy to import and owns many processes):
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

import ray

from bench.measure import Series

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


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(root: int) -> list[int]:
    """Every process below ``root`` (by parent ID), found in /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found: list[int] = []
    frontier = [root]
    for _depth in range(20):  # bounded
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        if not children:
            break
        found += children
        frontier = children
    return found


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
    init_s = time.monotonic() - began
    out: dict[str, Any] = {"ray": ray.__version__, "init_s": init_s, "actors": actors}
    names = [f"peer-{i}" for i in range(actors)]
    handles: list[Any] = []
    try:
        t0 = time.monotonic()
        for name in names:
            handles.append(Peer.options(name=name, lifetime="detached").remote(name))
        pids = ray.get([h.pid.remote() for h in handles], timeout=60 + actors * 5)
        out["create_s"] = time.monotonic() - t0

        rss = [_status_kib(pid, "VmRSS") for pid in pids]
        pss = [_pss_kib(pid) for pid in pids]
        ray_own = [p for p in _descendants(os.getpid()) if p not in set(pids)]
        out["memory"] = {
            "actor_rss_kib": sum(rss) / len(rss),
            "actor_pss_kib": sum(pss) / len(pss),
            "ray_processes": len(ray_own),
            "ray_rss_kib": sum(_status_kib(p, "VmRSS") for p in ray_own),
            "driver_rss_kib": _status_kib(os.getpid(), "VmRSS"),
        }

        rng = random.Random(1)
        for name in names[:10]:  # warm-up
            ray.get_actor(name)
        gets = Series()
        for _i in range(lookups):
            name = rng.choice(names)
            t0p = time.perf_counter()
            ray.get_actor(name)
            gets.values.append(time.perf_counter() - t0p)
        out["get_actor"] = gets.values

        handle = ray.get_actor(names[0])
        for i in range(10):
            ray.get(handle.ping.remote(i), timeout=30)
        rtt = Series()
        for i in range(calls):
            t0p = time.perf_counter()
            if ray.get(handle.ping.remote(i), timeout=30) != i:
                raise AssertionError("the actor answered something else")
            rtt.values.append(time.perf_counter() - t0p)
        out["call"] = rtt.values

        recovered = []
        for k in range(kills):
            victim = ray.get_actor(names[k % len(names)])
            pid = ray.get(victim.pid.remote(), timeout=30)
            os.kill(pid, signal.SIGKILL)
            recovered.append(_call_until_answered(victim, pid, timeout=120))
        out["recovered"] = recovered
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
