"""The JSON API of the trackers pages, under the same blueprint and permission hook.

Routes (relative to the blueprint's prefix)::

    GET  /api/trackers?kind=&status=&transaction_id=&page=&per_page=
         200 {"count", "page", "per_page", "pages", "trackers": [tracker, ...]}
    GET  /api/tracker?kind=K&transaction_id=T
         200 {"tracker", "state", "history": [event, ...], "explain"}; 404 (the same body, with
         "error") when the tracker has left the registry or never was
    POST /api/tracker/stop | /api/tracker/restart | /api/tracker/start-afresh
         a JSON body {"kind": K, "transaction_id": T}
         200 {"action", "kind", "transaction_id", "message", "tracker"}; 202 for a stop requested
         but not yet done (the tracker did not exit in time; it will)

Errors are ``{"error": "..."}`` with their status: 400 bad input (an invalid transaction ID, an
unknown status, a page out of range), 403 refused (the permission hook, or a cross-site request),
404 no such tracker, 409 the action does not apply (restart a dead tracker, start a live one
afresh), 415 a POST without a JSON body, 503 the registry is unavailable or not migrated.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from tracking.contrib.flask.actions import perform
from tracking.contrib.flask.options import ACTION, ACTIONS, VIEW, Options, allow, client
from tracking.contrib.flask.queries import Filters, detail, identity, ref_json, trackers_page


class Api:
    """The JSON views of one mounted blueprint."""

    def __init__(self, options: Options) -> None:
        self.options = options

    def register(self, bp: Blueprint) -> None:
        bp.add_url_rule("/api/trackers", "api_trackers", self.trackers)
        bp.add_url_rule("/api/tracker", "api_tracker", self.tracker)
        bp.add_url_rule(
            f"/api/tracker/<{ACTION}:action>",
            "api_action",
            self.act,
            methods=["POST"],
        )

    def trackers(self) -> ResponseReturnValue:
        f = Filters.read(request.args, self.options.page_size, self.options.max_page_size)
        allow(self.options, VIEW, f.kind, f.transaction_id)
        page = trackers_page(client(), f)
        return {
            "count": page.count,
            "page": f.page,
            "per_page": f.per_page,
            "pages": page.pages,
            "trackers": [ref_json(ref) for ref in page.trackers],
        }

    def tracker(self) -> ResponseReturnValue:
        kind, transaction_id = identity(request.args)
        allow(self.options, VIEW, kind, transaction_id)
        facts = detail(client(), kind, transaction_id)
        body: dict[str, Any] = facts.json()
        if facts.tracker is None:
            body["error"] = f"no {kind} tracker is registered for {transaction_id!r}"
            return body, 404
        return body

    def act(self, action: str) -> ResponseReturnValue:
        assert action in ACTIONS
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return {"error": 'send a JSON object: {"kind": ..., "transaction_id": ...}'}, 400
        kind, transaction_id = identity(body)
        allow(self.options, action, kind, transaction_id)
        outcome = perform(client(), action, kind, transaction_id, self.options.stop_timeout)
        answer = {
            "action": action,
            "kind": kind,
            "transaction_id": transaction_id,
            "message": outcome.message,
            "tracker": ref_json(outcome.tracker) if outcome.tracker is not None else None,
        }
        if outcome.status >= 400:
            answer["error"] = outcome.message
        return answer, outcome.status
