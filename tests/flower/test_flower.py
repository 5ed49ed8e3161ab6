"""The real Flower against a real worker: it shows the running tracker, named after its class with
its transaction ID in its arguments, and revoking it there stops it as "shutdown" (deregistered)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import Cluster, Stack, free_port, running, wait_for
from tests.integration.trackers import Counter
from tracking import registry

pytestmark = [pytest.mark.stacks("postgres-redis"), pytest.mark.cluster(workers=("w1",), beat=False)]


class Flower:
    """``celery -A tracking flower`` on a loopback port, its API open without authentication."""

    def __init__(self, stack: Stack) -> None:
        self.port = free_port()
        self.log_path = stack.folder / "flower.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tracking",
                    "flower",
                    f"--port={self.port}",
                    "--address=127.0.0.1",
                ],
                cwd=stack.folder,
                env={**stack.env(), "FLOWER_UNAUTHENTICATED_API": "true"},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str) -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method, data=b"")
        if method == "GET":
            req.data = None
        with urllib.request.urlopen(req, timeout=10) as response:
            return json.loads(response.read())

    def hears(self, worker: str) -> bool:
        """Whether Flower answers and has received events from ``worker`` (name@...): events sent
        before its receiver was listening are lost to it."""
        if self.proc.poll() is not None:
            raise AssertionError(f"flower exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        try:
            workers = self.request("GET", "/workers?json=1")["data"]
        except (urllib.error.URLError, ConnectionError):
            return False
        return any(w.get("hostname", "").startswith(f"{worker}@") for w in workers)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def flower(stack: Stack, cluster: Cluster) -> Iterator[Flower]:
    flower = Flower(stack)
    try:
        wait_for(lambda: flower.hears("w1"), timeout=60, interval=0.2, what="flower to hear from w1")
        yield flower
    finally:
        flower.close()


def test_a_tracker_revoked_from_flower_stops_as_shutdown_and_is_deregistered(
    stack: Stack, cluster: Cluster, flower: Flower
) -> None:
    txid = "txn_flower_" + stack.queue.rsplit("-", 1)[-1]
    Counter.start(txid)
    ref = wait_for(lambda: running(Counter, txid), what="the tracker to run")

    def shown() -> dict[str, Any] | None:
        tasks = flower.request("GET", "/api/tasks?taskname=tracking.Counter")
        for task_id, task in tasks.items():
            if txid in (task.get("args") or "") and task.get("state") == "STARTED":
                return {"task_id": task_id, **task}
        return None

    task = wait_for(shown, timeout=60, interval=0.2, what="flower to show the running tracker")
    assert task["task_id"] == ref.task_id
    assert task["name"] == "tracking.Counter"
    assert task["worker"] == ref.worker

    answer = flower.request("POST", f"/api/task/revoke/{task['task_id']}?terminate=true")
    assert ref.task_id in answer["message"]

    wait_for(lambda: Counter.lookup(txid) is None, timeout=30, what="the revoked tracker to leave")
    last = registry.history(stack.settings(), "Counter", txid)[-1]
    assert (last.event, last.detail) == ("stopped", "shutdown")

    def ended() -> dict[str, Any] | None:
        info: dict[str, Any] = flower.request("GET", f"/api/task/info/{ref.task_id}")
        return info if info.get("state") != "STARTED" else None

    info = wait_for(ended, what="flower to see the task end")
    assert (info["state"], info["result"]) == ("SUCCESS", "'stopped (shutdown)'")
