"""The worker side of the adapter: this process's :class:`~tracking.worker.WorkerProcess`, and
the Celery signals that drive it (worker ready, revoke, warm shutdown)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery, signals

from tracking import registry, supervisor
from tracking.celery import state
from tracking.celery.config import RETRY_POLICY, is_embedded
from tracking.client import Client
from tracking.exceptions import NotFound, RegistryUnavailable
from tracking.settings import Settings
from tracking.tracker import of_kind
from tracking.worker import Batch, PublishBatch, Waker, WorkerProcess

log = logging.getLogger("tracking.celery")
_process: WorkerProcess | None = None


def for_app(app: Celery, hostname: str) -> WorkerProcess:
    """This process's worker side (one per process; a forked pool child gets its own)."""
    global _process
    with state.lock:
        if _process is None or _process.pid != os.getpid():
            from celery.worker import state as worker_state

            client = state.client_for(app)
            _process = WorkerProcess(
                client.settings,
                hostname,
                client.publish,
                sweep=lambda: sweep(client, app),
                revoked=lambda task_id: task_id in worker_state.revoked,
                publish_batch=publish_batch_with(app, client.settings),
            )
        return _process


def task_name(kind: str) -> str:
    """The task of the trackers of ``kind``."""
    return f"tracking.{kind}"


def batch_task_name(kind: str) -> str:
    """The task that ticks a batch of parked trackers of ``kind`` ("/" is in no kind's name)."""
    return f"tracking.{kind}/batch"


def publish_batch_with(app: Celery, settings: Settings) -> PublishBatch:
    """A publisher of batches of parked trackers, with ``app``: one message for the batch, whose
    argument is the list of ``[transaction ID, epoch]`` pairs (Flower shows them). It is routed as
    the kind's tracker messages are (an app's own ``task_routes`` for ``tracking.<kind>`` send it
    to the workers that run that kind), unless the settings name a queue."""
    queue = {"queue": settings.queue} if settings.queue else {}

    def publish(batch: Batch) -> None:
        app.send_task(
            batch_task_name(batch.kind),
            args=[[list(member) for member in batch.members]],
            task_id=batch.task_id,
            serializer="json",
            retry=True,
            retry_policy=RETRY_POLICY,
            route_name=task_name(batch.kind),
            **queue,
        )

    return publish


def sweep(client: Client, app: Celery | None = None) -> dict[str, int]:
    """One supervisor sweep with ``client``'s publisher (and broker housekeeping); with ``app``,
    the parked entries it wakes are published in batches, as a worker's waker does."""
    publish_woken = None
    if app is not None:
        waker = Waker(client.settings, client.publish, publish_batch_with(app, client.settings))
        publish_woken = waker.publish_woken
    counts = supervisor.sweep(client.settings, client.publish, publish_woken=publish_woken)
    if is_embedded(client.settings.broker_url):
        _prune_processed(Path(client.settings.broker_folder) / "processed")
    return counts


def _prune_processed(folder: Path, older_than: float = 600.0) -> None:
    cutoff = time.time() - older_than
    for path in folder.glob("*.msg"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except FileNotFoundError:
            pass


def _check_gevent_driver() -> None:
    """Say so loudly when psycopg was imported before gevent patched this process: its C wait
    function then blocks every greenlet during each query (measured: a 1 s query froze them all)."""
    monkey, waiting = sys.modules.get("gevent.monkey"), sys.modules.get("psycopg.waiting")
    if monkey is None or waiting is None or not monkey.is_module_patched("select"):
        return
    if waiting.wait is getattr(waiting, "wait_c", None):
        log.error(
            "tracking: psycopg was imported before gevent patched this process, so every query "
            "blocks all greenlets. Start the worker with the celery command (celery -A ... worker "
            "-P gevent) and import nothing that imports psycopg before it patches."
        )


def _serve_metrics(settings: Settings) -> None:
    try:
        from tracking import metrics
    except ImportError:
        log.error(
            "tracking: TRACKING_METRICS_PORT is set but prometheus_client is not installed "
            '(pip install "tracking[prometheus]"); no metrics'
        )
        return
    try:
        metrics.serve(settings)
    except OSError as exc:
        log.error(
            "tracking: cannot serve metrics on %s:%s: %s",
            settings.metrics_address,
            settings.metrics_port,
            exc,
        )


@signals.worker_ready.connect(weak=False)
def _on_worker_ready(sender: Any = None, **_kwargs: Any) -> None:
    if sender is None or sender.app not in state.apps():
        return
    _check_gevent_driver()
    wp = for_app(sender.app, sender.hostname)
    if wp.settings.metrics_port is not None:
        _serve_metrics(wp.settings)
    client = state.client_for(sender.app)

    def reconcile() -> None:
        try:
            wp.start()
            counts = sweep(client, sender.app)
            log.info("tracking: worker %s reconciled at start: %s", sender.hostname, counts)
        except Exception:
            log.exception("tracking: reconcile at worker start failed (the supervisor will retry)")

    threading.Thread(target=reconcile, name="tracking-reconcile", daemon=True).start()


@signals.task_revoked.connect(weak=False)
def _on_task_revoked(sender: Any = None, request: Any = None, **_kwargs: Any) -> None:
    """A tracker revoked before it ran (Flower, ``celery control revoke``) is stopped as "shutdown".

    Without this its entry would stay pending and the supervisor would publish it again, and again.
    A running tracker sees its task ID in the worker's revoked set and stops itself.
    """
    name = getattr(sender, "name", "") or ""
    kind = name.removeprefix("tracking.")
    app = getattr(sender, "app", None)
    if app not in state.apps() or of_kind(kind) is None or request is None or not request.args:
        return
    settings = state.client_for(app).settings
    try:
        registry.request_stop(settings, kind, request.args[0], "shutdown", task_id=request.id)
    except NotFound:
        pass
    except RegistryUnavailable as exc:
        log.warning("revoke of %s %s not recorded: %s", kind, request.args[0], exc)


@signals.worker_shutting_down.connect(weak=False)
def _on_worker_shutting_down(**_kwargs: Any) -> None:
    if _process is not None and _process.pid == os.getpid():
        _process.begin_shutdown()


@signals.worker_shutdown.connect(weak=False)
@signals.worker_process_shutdown.connect(weak=False)
def _on_worker_shutdown(**_kwargs: Any) -> None:
    if _process is not None and _process.pid == os.getpid():
        _process.begin_shutdown()
        _process.close()
