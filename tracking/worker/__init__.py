"""The worker side: what a Celery worker process runs for `tracking`.

``process``      :class:`WorkerProcess`, which composes the parts below, one per process
``lease``        the process's lease, renewed by heartbeat: every tracker's lease, and its fence
``control``      the control loop: renewals, stop requests and mail, strays, a sweep now and then
``waker``        makes due parked and failed entries pending, and publishes them
``runner``       the run of one incarnation: claim, init, messages and ticks
``exits``        an incarnation's writes (checkpoint, park) and exits (done, crash, stop, handoff)
``batch``        a batch of parked trackers of one kind: claimed, ticked and parked together
``mailbox``      how an incarnation handles its casts and calls
``incarnation``  what the process knows of one running incarnation; :class:`Interrupt`
``retry``        the one way a registry write is retried
"""

from tracking.worker.batch import run_batch
from tracking.worker.incarnation import Incarnation, Interrupt
from tracking.worker.process import WorkerProcess
from tracking.worker.runner import run
from tracking.worker.waker import Batch, PublishBatch, Waker

__all__ = ["Batch", "Incarnation", "Interrupt", "PublishBatch", "Waker", "WorkerProcess", "run", "run_batch"]
