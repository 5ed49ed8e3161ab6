"""Checks on what users hand us: transaction IDs and JSON documents (args, state, messages)."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from tracking.exceptions import InvalidTransactionId, StateNotSerializable, TransactionIdNotStr

MAX_TRANSACTION_ID = 255


def transaction_id(value: object) -> str:
    """Return ``value`` if it is a valid transaction ID; raise otherwise (nothing is written)."""
    if not isinstance(value, str):
        raise TransactionIdNotStr(f"a transaction ID must be a str, not {type(value).__name__}")
    if not value or not value.strip():
        raise InvalidTransactionId("a transaction ID must not be empty or blank")
    if len(value) > MAX_TRANSACTION_ID:
        raise InvalidTransactionId(
            f"a transaction ID must be at most {MAX_TRANSACTION_ID} characters, not {len(value)}"
        )
    for ch in value:
        if unicodedata.category(ch) == "Cc":
            raise InvalidTransactionId(f"a transaction ID must not contain control characters (found {ch!r})")
    return value


def json_object(value: object, what: str, max_bytes: int) -> dict[str, Any]:
    """``value`` as it will come back from the registry (a JSON object), or StateNotSerializable."""
    if not isinstance(value, dict):
        raise StateNotSerializable(f"{what} must be a dict (a JSON object), not {type(value).__name__}")
    decoded: dict[str, Any] = json_value(value, what, max_bytes)
    return decoded


def json_value(value: object, what: str, max_bytes: int) -> Any:
    """``value`` as it will come back from the registry (any JSON value), or StateNotSerializable."""
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise StateNotSerializable(f"{what} is not JSON-serialisable: {exc}") from None
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise StateNotSerializable(f"{what} is {size} bytes of JSON, over the limit of {max_bytes}")
    return json.loads(text)
