"""A Flask app with two views (start tracking a transaction, look up its tracker) and the trackers
pages mounted at /tracking.

    flask --app examples.flask_app.app run

Configuration comes from the environment: ``TRACKING_DATABASE_URL``, ``CELERY_BROKER_URL`` and
any other ``TRACKING_*`` variable, read by the extension (they win over ``app.config``), so the web
app and the workers started with the same environment agree; ``FLASK_*`` variables go to
``app.config`` without the prefix (``FLASK_SECRET_KEY``, ``FLASK_UI_ACTIONS=true``). See README.md.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app, jsonify, request, url_for

import tracking
from examples.flask_app.trackers import DEFAULT_CONFIRMATIONS, TransactionTracker
from tracking.contrib.flask import VIEW, Tracking, blueprint

tracking_ext = Tracking()


def operator_permission(action: str, kind: str | None, transaction_id: str | None) -> bool:
    """Who may do what on the trackers pages: anyone may look; Stop, Restart now and Start afresh
    only when ``UI_ACTIONS`` is set (``FLASK_UI_ACTIONS=true``). A real app asks who is logged in
    here (Flask-Login's ``current_user``, say)."""
    return action == VIEW or bool(current_app.config["UI_ACTIONS"])


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app; ``config`` is added to its configuration (tests pass theirs)."""
    app = Flask(__name__)
    app.config.from_mapping(TRACKING_IMPORTS="examples.flask_app.trackers", UI_ACTIONS=False)
    app.config.from_prefixed_env()  # FLASK_SECRET_KEY, FLASK_UI_ACTIONS, ...
    if config:
        app.config.from_mapping(config)
    if not app.config.get("SECRET_KEY"):
        # For the pages' flash messages. Random: fine for one development process; set
        # FLASK_SECRET_KEY where several processes serve the app.
        app.config["SECRET_KEY"] = secrets.token_hex()
    tracking_ext.init_app(app)
    app.register_blueprint(blueprint(permission=operator_permission), url_prefix="/tracking")

    @app.post("/transactions/<transaction_id>/track")
    def track(transaction_id: str) -> Any:
        """Start tracking the transaction (idempotent): 202, and where to look it up."""
        body = request.get_json(silent=True) or {}
        confirmations = body.get("confirmations", DEFAULT_CONFIRMATIONS) if isinstance(body, dict) else None
        if type(confirmations) is not int or confirmations < 1:
            return jsonify(error="confirmations must be a positive integer"), 400
        ref = TransactionTracker.start(transaction_id, confirmations=confirmations)
        response = jsonify(
            transaction_id=ref.transaction_id,
            kind=ref.kind,
            status=ref.status.value,
            task_id=ref.task_id,
            already_started=ref.already_started,
        )
        response.status_code = 202
        response.headers["Location"] = url_for("tracker", transaction_id=transaction_id)
        return response

    @app.get("/transactions/<transaction_id>/tracker")
    def tracker(transaction_id: str) -> Any:
        """The live tracker of the transaction: where it runs and its last checkpoint."""
        ref = TransactionTracker.lookup(transaction_id)
        if ref is None:
            return not_found()
        try:
            state = TransactionTracker.get_state(transaction_id)
        except tracking.NotFound:  # it finished between the two reads
            return not_found()
        return jsonify(
            transaction_id=ref.transaction_id,
            kind=ref.kind,
            status=ref.status.value,
            worker=ref.worker,
            task_id=ref.task_id,
            restarts=ref.restarts,
            state=state,
        )

    @app.errorhandler(tracking.InvalidTransactionId)
    def bad_transaction_id(exc: Exception) -> Any:
        return jsonify(error=str(exc)), 400

    @app.errorhandler(tracking.RegistryUnavailable)
    def registry_unavailable(exc: Exception) -> Any:
        return jsonify(error="the tracker registry is unavailable, try again"), 503

    return app


def not_found() -> Any:
    return jsonify(error="not found"), 404
