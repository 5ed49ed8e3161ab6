"""Two JSON views: start tracking a transaction, and look up its tracker."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import tracking
from transactions.trackers import DEFAULT_CONFIRMATIONS, TransactionTracker


def error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@csrf_exempt  # an API for other services, not a form: authenticate it as the rest of your API
@require_POST
def track(request: HttpRequest, transaction_id: str) -> JsonResponse:
    """Start tracking the transaction (idempotent): 202, and where to look it up."""
    try:
        body: Any = json.loads(request.body or b"{}")
    except ValueError:
        return error("the body must be JSON", 400)
    confirmations = body.get("confirmations", DEFAULT_CONFIRMATIONS) if isinstance(body, dict) else None
    if type(confirmations) is not int or confirmations < 1:
        return error("confirmations must be a positive integer", 400)
    try:
        ref = TransactionTracker.start(transaction_id, confirmations=confirmations)
    except tracking.InvalidTransactionId as exc:
        return error(str(exc), 400)
    except tracking.RegistryUnavailable:
        return error("the tracker registry is unavailable, try again", 503)
    response = JsonResponse(
        {
            "transaction_id": ref.transaction_id,
            "kind": ref.kind,
            "status": ref.status.value,
            "task_id": ref.task_id,
            "already_started": ref.already_started,
        },
        status=202,
    )
    response["Location"] = reverse("tracker", args=[transaction_id])
    return response


@require_GET
def tracker(request: HttpRequest, transaction_id: str) -> JsonResponse:
    """The live tracker of the transaction: where it runs and its last checkpoint."""
    try:
        ref = TransactionTracker.lookup(transaction_id)
        state = TransactionTracker.get_state(transaction_id) if ref is not None else None
    except tracking.InvalidTransactionId as exc:
        return error(str(exc), 400)
    except tracking.NotFound:  # it finished between the two reads
        ref = None
    except tracking.RegistryUnavailable:
        return error("the tracker registry is unavailable, try again", 503)
    if ref is None:
        return error("not found", 404)
    return JsonResponse(
        {
            "transaction_id": ref.transaction_id,
            "kind": ref.kind,
            "status": ref.status.value,
            "worker": ref.worker,
            "task_id": ref.task_id,
            "restarts": ref.restarts,
            "state": state,
        }
    )
