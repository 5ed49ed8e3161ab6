"""The trackers pages: a list, one tracker, and its Stop, Restart now and Start afresh buttons, on a
blueprint an app mounts where it likes::

    app.register_blueprint(tracking.contrib.flask.blueprint(permission=can), url_prefix="/tracking")

Routes, relative to the blueprint's prefix, with their endpoints (under the blueprint's name,
``tracking`` by default)::

    GET  /                         trackers  the list: ?kind=&status=&transaction_id=&page=&per_page=
    GET  /tracker?kind=&transaction_id=
                                   tracker   one tracker (404 without an entry: it still shows the history)
    POST /tracker/<action>         action    stop, restart or start-afresh; form fields kind and
                                             transaction_id; redirects (303) to where it is now
    GET, POST /api/...             api_*     the JSON API (:mod:`.api`)

Selectors a browser test can rely on:

- every page: ``#messages`` (``li.message.success|info|error``, the flashed outcome of an action);
  an error page (400, 403, 404, 503): ``#error`` with ``data-status``, its text in ``#error-message``
- the list: the form ``#filters`` with ``select#kind``, ``select#status``, ``input#transaction_id``,
  ``button#filter``, link ``#clear``; ``#count`` (``data-count``: how many match in all); the table
  ``table#trackers``, one ``tr.tracker`` per entry with ``data-kind``, ``data-transaction-id``,
  ``data-status``, ``data-epoch``, and a link ``a.detail`` to its page; ``#empty`` when none match;
  paging ``nav#paging`` with ``#page`` (``data-page``, ``data-pages``), links ``a#previous``, ``a#next``
- one tracker: ``#transaction-id``; ``table#fields`` with a ``tr[data-field=NAME]`` per field
  (kind, transaction_id, status, epoch, task_id, worker, restarts, started_at, heartbeat_at,
  last_error), the value in its ``td``; ``#not-registered`` when it has left the registry;
  ``pre#state``; ``pre#explain`` (what ``tracking explain`` prints); ``table#history`` with one
  ``tr.event`` per event (``data-event``, ``data-epoch``), oldest first; the actions in
  ``#actions``: one ``form.action`` each (``#stop-form``, ``#restart-form``, ``#start-afresh-form``)
  with a ``button`` named and id'd ``stop``, ``restart`` or ``start-afresh``, shown only when the
  action applies to the entry's status and the permission allows it; ``#no-actions`` otherwise
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask.sansio.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, Forbidden, NotFound, UnsupportedMediaType

from tracking import tracker as trackers
from tracking.contrib.flask.actions import Outcome, perform
from tracking.contrib.flask.api import Api
from tracking.contrib.flask.extension import EXTENSION_KEY
from tracking.contrib.flask.options import (
    ACTION,
    ACTIONS,
    VIEW,
    Options,
    Permission,
    allow,
    client,
    is_api,
    read_only,
    refuse_cross_site_posts,
)
from tracking.contrib.flask.queries import STATUSES, Detail, Filters, detail, identity, trackers_page
from tracking.exceptions import (
    InvalidTransactionId,
    RegistryNotMigrated,
    RegistryRefused,
    RegistryUnavailable,
)

#: the buttons' labels
LABELS = {"stop": "Stop", "restart": "Restart now", "start-afresh": "Start afresh"}


def blueprint(
    permission: Permission | None = None,
    *,
    name: str = "tracking",
    page_size: int = 50,
    max_page_size: int = 200,
    stop_timeout: float = 5.0,
    trusted_origins: Iterable[str] = (),
) -> Blueprint:
    """The trackers pages and their JSON API, to mount with ``app.register_blueprint(...)`` on
    an app that :class:`~tracking.contrib.flask.Tracking` was initialised on (first).

    ``permission(action, kind, transaction_id) -> bool`` is asked before every page (``"view"``)
    and every action (``"stop"``, ``"restart"``, ``"start-afresh"``); a refusal is a 403. By
    default (:func:`~tracking.contrib.flask.read_only`) anyone who reaches the pages may look and
    nobody may act. ``page_size`` and ``max_page_size`` bound a list's page; ``stop_timeout`` is
    how long Stop waits for the tracker to exit before it says "stop requested".
    ``trusted_origins`` (``"https://admin.example.com"``) may POST besides the app's own origin.
    """
    origins = frozenset(origin.rstrip("/") for origin in trusted_origins)
    options = Options(permission or read_only, page_size, max_page_size, stop_timeout, origins)
    bp = Blueprint(name, __name__, template_folder="templates")
    bp.record_once(_require_the_extension)
    pages = Pages(options)
    bp.before_request(lambda: refuse_cross_site_posts(options))
    bp.add_url_rule("/", "trackers", pages.trackers)
    bp.add_url_rule("/tracker", "tracker", pages.tracker)
    bp.add_url_rule(f"/tracker/<{ACTION}:action>", "action", pages.act, methods=["POST"])
    Api(options).register(bp)
    for error in (BadRequest, Forbidden, NotFound, UnsupportedMediaType):
        bp.register_error_handler(error, _http_error)
    bp.register_error_handler(InvalidTransactionId, lambda exc: _error(400, str(exc)))
    bp.register_error_handler(RegistryUnavailable, _unavailable)
    bp.register_error_handler(RegistryNotMigrated, _not_migrated)
    bp.register_error_handler(RegistryRefused, _refused)
    bp.context_processor(lambda: {"when": _when})
    return bp


def _require_the_extension(state: BlueprintSetupState) -> None:
    if EXTENSION_KEY not in state.app.extensions:
        raise RuntimeError(
            "The tracking pages need the 'Tracking' extension: call Tracking(app) or "
            "tracking_ext.init_app(app) before app.register_blueprint(blueprint(...))."
        )


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _http_error(exc: Any) -> ResponseReturnValue:
    return _error(exc.code, exc.description)


def _unavailable(exc: RegistryUnavailable) -> ResponseReturnValue:
    # The cause names the database's host: for the log, not for whoever asked.
    current_app.logger.warning("tracking pages: %s", exc)
    return _error(503, "The tracker registry is unavailable; try again in a moment.")


def _not_migrated(exc: RegistryNotMigrated) -> ResponseReturnValue:
    current_app.logger.error("tracking pages: %s", exc)  # names the database: for the log only
    return _error(503, "The tracker registry is not migrated: run `tracking migrate`.")


def _refused(exc: RegistryRefused) -> ResponseReturnValue:
    current_app.logger.error("tracking pages: %s", exc)
    return _error(500, "The tracker registry refused the request; the server's log says why.")


def _error(status: int, message: str) -> ResponseReturnValue:
    """An error as JSON (the API) or as a page."""
    if is_api():
        return {"error": message}, status
    return render_template("tracking/error.html", status=status, message=message), status


class Pages:
    """The HTML views of one mounted blueprint."""

    def __init__(self, options: Options) -> None:
        self.options = options

    def trackers(self) -> ResponseReturnValue:
        """The list of trackers, filtered and paged."""
        f = Filters.read(request.args, self.options.page_size, self.options.max_page_size)
        allow(self.options, VIEW, f.kind, f.transaction_id)
        kinds = sorted({*trackers.kinds(), *([f.kind] if f.kind else [])})
        page = trackers_page(client(), f)
        return render_template("tracking/trackers.html", page=page, f=f, kinds=kinds, statuses=STATUSES)

    def tracker(self) -> ResponseReturnValue:
        """One tracker: its fields, state, explanation, history and the buttons that apply."""
        kind, transaction_id = identity(request.args)
        allow(self.options, VIEW, kind, transaction_id)
        return self.render_tracker(detail(client(), kind, transaction_id))

    def render_tracker(self, facts: Detail, outcome: Outcome | None = None) -> ResponseReturnValue:
        """The tracker's page (with ``outcome`` said on it where it cannot be flashed)."""
        kind, txid = facts.kind, facts.transaction_id
        actions = [a for a in facts.applicable() if self.options.permission(a, kind, txid)]
        messages = [(outcome.category, outcome.message)] if outcome is not None else []
        status = outcome.status if outcome is not None else 200 if facts.tracker is not None else 404
        state = json.dumps(facts.state, indent=2, sort_keys=True) if facts.state is not None else None
        html = render_template(
            "tracking/tracker.html",
            facts=facts,
            state=state,
            actions=actions,
            labels=LABELS,
            messages=messages,
        )
        return html, status

    def act(self, action: str) -> ResponseReturnValue:
        """Do ``action`` (a POSTed form), then show where the tracker is: the outcome is flashed
        on the page it redirects to, or said on the tracker's page if the app has no secret key
        (no session to flash into)."""
        assert action in ACTIONS
        kind, transaction_id = identity(request.form)
        allow(self.options, action, kind, transaction_id)
        outcome = perform(client(), action, kind, transaction_id, self.options.stop_timeout)
        if not current_app.secret_key:
            return self.render_tracker(detail(client(), kind, transaction_id), outcome)
        flash(outcome.message, outcome.category)
        if outcome.tracker is None:
            return redirect(url_for(".trackers"), 303)
        return redirect(url_for(".tracker", kind=kind, transaction_id=transaction_id), 303)
