"""The Celery glue: one task per tracker kind, the supervisor task and its beat entry, the worker
signals that drive the per-process runtime, the default app behind ``celery -A tracking``, and
:func:`install` onto an application's own Celery app.

Tracker tasks are ordinary Celery tasks named ``tracking.<kind>`` whose arguments are the
transaction ID (so Flower shows it) and the epoch of the incarnation the message is for. They are
acknowledged early, when the worker takes them: the registry, not the broker, is what keeps a
tracker alive (a message lost before the claim leaves the entry pending and the supervisor
publishes it again), so no broker ever holds a long-unacknowledged tracker message.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Celery, signals
from celery.utils.imports import import_from_cwd

from tracking import embedded, registry, runtime, supervisor
from tracking.exceptions import NotFound, RegistryUnavailable
from tracking.settings import Settings

if TYPE_CHECKING:
    from tracking.tracker import Tracker

log = logging.getLogger("tracking.celery")
embedded.register()

SUPERVISE_TASK = "tracking.supervise"
BEAT_ENTRY = "tracking-supervisor"

_trackers: dict[str, type[Tracker]] = {}
_installed: list[tuple[Celery, Settings]] = []
_lock = threading.RLock()
_default_app: Celery | None = None
_runtime: runtime.WorkerRuntime | None = None


def task_name(kind: str) -> str:
    return f"tracking.{kind}"


# -- configuration ----------------------------------------------------------------------------------


def recommended_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings `tracking` runs best with (see docs/celery-settings.md for why)."""
    conf: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "worker_prefetch_multiplier": 1,
        "worker_pool": "threads",
        "worker_concurrency": 100,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "broker_connection_retry_on_startup": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # After a reconnect Celery restores the prefetch count with a basic.qos sent from the thread
        # that acknowledges a task: a pool thread in the threads pool, racing the consumer for the
        # AMQP socket. It hangs and every later task with it (docs/celery-settings.md).
        "worker_enable_prefetch_count_reduction": False,
    }
    if is_embedded(settings.broker_url):
        conf["broker_transport_options"] = embedded_broker_options(settings.broker_folder)
    return conf


def is_embedded(broker_url: str) -> bool:
    return broker_url.startswith(f"{embedded.SCHEME}:")


def embedded_broker_options(folder: str) -> dict[str, Any]:
    """The embedded broker in one folder, shared by every process on the machine.

    A message is written to ``tmp/`` and renamed into ``queue/`` when complete; a consumer takes it
    by moving it to ``processed/`` (renames within one folder tree: atomic, so two consumers cannot
    both take one message), which the supervisor prunes.
    """
    base = Path(folder).resolve()
    queue = base / "queue"
    for sub in (queue, base / "tmp", base / "control", base / "processed"):
        sub.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue),
        "data_folder_out": str(queue),
        "tmp_folder": str(base / "tmp"),
        "control_folder": str(base / "control"),
        "processed_folder": str(base / "processed"),
        "store_processed": True,
        "polling_interval": 0.1,
    }


def settings_for(app: Celery) -> Settings:
    """Settings from the app's configuration (``tracking_*`` keys and its ``broker_url``),
    overridden by ``TRACKING_*`` variables and ``CELERY_BROKER_URL``."""
    return _settings_from(dict(app.conf.items()))


def _settings_from(conf: dict[str, Any]) -> Settings:
    from_file = {k[len("tracking_") :]: v for k, v in conf.items() if k.lower().startswith("tracking_")}
    if conf.get("broker_url"):
        from_file.setdefault("broker_url", conf["broker_url"])
    return Settings.from_env(**from_file)


def default_app() -> Celery:
    """The app behind ``celery -A tracking``: the recommended settings, with the settings of the
    ``celeryconfig`` module (or ``CELERY_CONFIG_MODULE``) from the working folder on top, and the
    environment (``TRACKING_*``, ``CELERY_BROKER_URL``) over both."""
    global _default_app
    with _lock:
        if _default_app is None:
            module = _config_module(os.environ.get("CELERY_CONFIG_MODULE", "celeryconfig"))
            settings = _settings_from(module)
            conf = recommended_config(settings)
            if not is_embedded(settings.broker_url):
                conf.pop("broker_transport_options", None)  # the embedded broker's, not this one's
            conf.update(module)
            conf["broker_url"] = settings.broker_url
            app = Celery("tracking", set_as_current=False)
            app.conf.update(conf)
            install(app, settings)
            _default_app = app
        return _default_app


def _config_module(name: str) -> dict[str, Any]:
    """The settings a Celery configuration module defines (not the names it imports)."""
    try:
        module = import_from_cwd(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return {}
    return {
        k: v
        for k, v in vars(module).items()
        if k.islower() and not k.startswith("_") and not isinstance(v, types.ModuleType) and not callable(v)
    }


def __getattr__(name: str) -> Any:
    # ``celery -A tracking`` looks up ``tracking.celery.app``; build it only when asked for.
    if name == "app":
        return default_app()
    raise AttributeError(name)


def install(app: Celery, settings: Settings | None = None) -> Celery:
    """Install `tracking` onto an existing Celery app: tracker tasks, the supervisor task and its
    beat entry, and the worker signals. The app keeps its own configuration and beat schedule.
    """
    settings = settings or settings_for(app)
    with _lock:
        for i, (known, _old) in enumerate(_installed):
            if known is app:  # installed already: it becomes the current one, with these settings
                _installed.pop(i)
                _installed.insert(0, (app, settings))
                return app
        _installed.insert(0, (app, settings))
        for cls in _trackers.values():
            _make_task(app, cls)
        _make_supervise_task(app, settings)
        _configure(app, settings)
    return app


def current_app() -> Celery:
    """The app trackers are published with: the last one `install` was called with."""
    with _lock:
        if _installed:
            return _installed[0][0]
    return default_app()


def current_settings() -> Settings:
    with _lock:
        if _installed:
            return _installed[0][1]
    default_app()
    return _installed[0][1]


# -- tasks ------------------------------------------------------------------------------------------


def register(cls: type[Tracker]) -> None:
    """Called for every Tracker subclass: one task per kind on every installed app."""
    with _lock:
        known = _trackers.get(cls.kind)
        if known is not None and known.__qualname__ != cls.__qualname__:
            from tracking.exceptions import InvalidTracker

            raise InvalidTracker(
                f"kind {cls.kind!r} is already used by {known.__module__}.{known.__qualname__}"
            )
        _trackers[cls.kind] = cls
        for app, _settings in _installed:
            _make_task(app, cls)


def tracker_class(kind: str) -> type[Tracker] | None:
    return _trackers.get(kind)


def _make_task(app: Celery, cls: type[Tracker]) -> None:
    kind = cls.kind
    if task_name(kind) in app.tasks:
        return  # a class redefined under the same kind: the task looks the class up when it runs

    # shared=False: a task of this app only (Celery would otherwise add it to every app).
    @app.task(
        name=task_name(kind), bind=True, acks_late=False, ignore_result=True, serializer="json", shared=False
    )
    def run_tracker(self: Any, transaction_id: str, epoch: int | None = None) -> str:
        # A malformed message is refused once: it is acknowledged already (acks_late=False), and
        # handing it to the registry would only fail, or be retried, forever.
        problem = _malformed(transaction_id, epoch)
        if problem is not None:
            log.error("%s: refused a malformed tracker message: %s", kind, problem)
            return "refused"
        if epoch is None:
            log.error(
                "%s %s: tracker tasks are sent by Tracker.start(), not called directly", kind, transaction_id
            )
            return "refused"
        tracker = _trackers[kind]  # the class defined last under this kind (module reloads)
        return runtime.run(
            tracker, transaction_id, epoch, self.request.id, process_runtime(self.app, self.request.hostname)
        )

    run_tracker.__doc__ = f"Run one incarnation of the {kind} tracker."


def _malformed(transaction_id: object, epoch: object) -> str | None:
    """What is wrong with a tracker message's arguments, or None (an epoch of None is left to the
    caller: it means the task was called directly)."""
    from tracking.exceptions import InvalidTransactionId
    from tracking.validation import transaction_id as valid_transaction_id

    def short(value: object) -> str:
        try:
            text = repr(value)
        except ValueError:  # an int past Python's 4300 digits
            return f"<{type(value).__name__} too long to show>"
        return text if len(text) <= 100 else f"{text[:97]}..."

    try:
        valid_transaction_id(transaction_id)
    except InvalidTransactionId as exc:
        return f"transaction ID {short(transaction_id)} is invalid ({exc})"
    # The registry stores an epoch in a signed 64-bit column (SQLite's driver raises a raw
    # OverflowError past it, PostgreSQL refuses it).
    if epoch is not None and (type(epoch) is not int or not 1 <= epoch <= 2**63 - 1):
        return f"epoch {short(epoch)} of {short(transaction_id)} is not an int in 1..2**63-1"
    return None


def _make_supervise_task(app: Celery, settings: Settings) -> None:
    @app.task(name=SUPERVISE_TASK, ignore_result=True, serializer="json", shared=False)
    def supervise() -> dict[str, int]:
        return sweep(settings)


def _configure(app: Celery, settings: Settings) -> None:
    """Add the supervisor's beat entry and the tracker modules to the app's own configuration."""

    def configure(**_kwargs: Any) -> None:
        app.conf.beat_schedule.setdefault(
            BEAT_ENTRY,
            {
                "task": SUPERVISE_TASK,
                "schedule": settings.sweep_seconds,
                "options": {"expires": max(settings.sweep_seconds, 1.0), **_queue(settings)},
            },
        )
        if settings.imports:  # the worker imports these (from its working folder) at start
            app.conf.imports = tuple(dict.fromkeys([*app.conf.imports, *settings.imports]))

    if app.configured:
        configure()
    else:
        app.on_after_configure.connect(configure, weak=False)


def sweep(settings: Settings) -> dict[str, int]:
    """One supervisor sweep with this process's publisher (and broker housekeeping)."""
    counts = supervisor.sweep(settings, publish)
    if is_embedded(settings.broker_url):
        _prune_processed(Path(settings.broker_folder) / "processed")
    return counts


def _prune_processed(folder: Path, older_than: float = 600.0) -> None:
    cutoff = time.time() - older_than
    for path in folder.glob("*.msg"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except FileNotFoundError:
            pass


def _queue(settings: Settings) -> dict[str, str]:
    return {"queue": settings.queue} if settings.queue else {}


def publish(row: registry.Row) -> None:
    """Send the message that starts incarnation ``row["epoch"]`` of a tracker."""
    app = current_app()
    settings = current_settings()
    app.send_task(
        task_name(row["kind"]),
        args=[row["transaction_id"]],
        kwargs={"epoch": row["epoch"]},
        task_id=row["task_id"],
        serializer="json",
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        **_queue(settings),
    )


# -- the worker's side ------------------------------------------------------------------------------


def process_runtime(app: Celery, hostname: str) -> runtime.WorkerRuntime:
    """This process's runtime (one per process; a forked pool child gets its own)."""
    global _runtime
    with _lock:
        if _runtime is None or _runtime.pid != os.getpid():
            settings = current_settings()
            from celery.worker import state as worker_state

            _runtime = runtime.WorkerRuntime(
                settings,
                hostname,
                publish,
                sweep=lambda: sweep(settings),
                revoked=lambda task_id: task_id in worker_state.revoked,
            )
        return _runtime


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


@signals.worker_ready.connect(weak=False)
def _on_worker_ready(sender: Any = None, **_kwargs: Any) -> None:
    if not _installed:
        return
    _check_gevent_driver()
    rt = process_runtime(sender.app, sender.hostname)
    if rt.settings.metrics_port is not None:
        try:
            from tracking.contrib import prometheus

            prometheus.serve(rt.settings)
        except ImportError:
            log.error(
                "tracking: TRACKING_METRICS_PORT is set but prometheus_client is not installed "
                '(pip install "tracking[prometheus]"); no metrics'
            )
        except OSError as exc:
            log.error(
                "tracking: cannot serve metrics on %s:%s: %s",
                rt.settings.metrics_address,
                rt.settings.metrics_port,
                exc,
            )

    def reconcile() -> None:
        try:
            rt.start()
            counts = sweep(rt.settings)
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
    if not _installed or kind not in _trackers or request is None or not request.args:
        return
    try:
        registry.request_stop(current_settings(), kind, request.args[0], "shutdown", task_id=request.id)
    except NotFound:
        pass
    except RegistryUnavailable as exc:
        log.warning("revoke of %s %s not recorded: %s", kind, request.args[0], exc)


@signals.worker_shutting_down.connect(weak=False)
def _on_worker_shutting_down(**_kwargs: Any) -> None:
    if _runtime is not None and _runtime.pid == os.getpid():
        _runtime.begin_shutdown()


@signals.worker_shutdown.connect(weak=False)
@signals.worker_process_shutdown.connect(weak=False)
def _on_worker_shutdown(**_kwargs: Any) -> None:
    if _runtime is not None and _runtime.pid == os.getpid():
        _runtime.begin_shutdown()
        _runtime.close()
