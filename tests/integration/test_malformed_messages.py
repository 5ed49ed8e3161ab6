"""A malformed tracker message is refused once, acknowledged and logged, on real workers: it never
wedges a worker, and trackers started afterwards run."""

from __future__ import annotations

import tracking.celery as glue
from tests.harness import Cluster, wait_for
from tests.integration.trackers import Counter

REFUSED = "refused a malformed tracker message"


def test_malformed_tracker_messages_are_refused_once_and_the_workers_run_on(
    cluster: Cluster, txid: str
) -> None:
    app = glue.current_app()  # the stack's app, installed in this process
    queue = cluster.stack.queue
    name = glue.task_name(Counter.kind)
    bad_id = {"poison": txid}  # not a transaction ID: a JSON object
    bad_epoch_id = f"{txid}-bad-epoch"
    app.send_task(name, args=[bad_id], kwargs={"epoch": 1}, queue=queue)
    app.send_task(name, args=[bad_epoch_id], kwargs={"epoch": "x"}, queue=queue)

    Counter.start(txid)
    wait_for(lambda: (Counter.get_state(txid) or {}).get("ticks", 0) >= 3, what="the new tracker to tick")

    def refusals() -> list[str]:
        logs = cluster.log("w1") + cluster.log("w2")
        return [line for line in logs.splitlines() if REFUSED in line]

    wait_for(lambda: len(refusals()) >= 2, what="both refusals in the worker logs")
    lines = refusals()
    assert len([line for line in lines if repr(bad_id) in line]) == 1, lines
    assert len([line for line in lines if repr(bad_epoch_id) in line and "'x'" in line]) == 1, lines
    assert Counter.lookup(bad_epoch_id) is None, "nothing was registered for the malformed message"
    Counter.stop(txid)
