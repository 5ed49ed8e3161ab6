"""Checks on what users hand us: transaction IDs, stop reasons and JSON documents (args, state,
messages), refused here when the registry database could not store them."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from tracking.exceptions import InvalidTransactionId, StateNotSerializable, TransactionIdNotStr

MAX_TRANSACTION_ID = 255
MAX_STOP_REASON = 255  # the registry's column for it

# PostgreSQL refuses NUL in text and jsonb. In JSON text (dumped with ensure_ascii=False) a NUL is
# always the escape \u0000; the escape counts only when preceded by an even number of backslashes
# (the string "\\u0000", a backslash then "u0000", dumps to \\u0000 and is storable).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_SURROGATE = re.compile("[\ud800-\udfff]")


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
        category = unicodedata.category(ch)
        if category == "Cc":
            raise InvalidTransactionId(f"a transaction ID must not contain control characters (found {ch!r})")
        if category == "Cs":
            raise InvalidTransactionId(
                f"a transaction ID must not contain lone surrogates (found {ch!r}): "
                "the registry database cannot store them"
            )
    return value


def stop_reason(value: object) -> str:
    """Return ``value`` if the registry can record it as the reason a tracker was stopped; raise
    ValueError otherwise (a non-empty str of at most 255 characters, without control characters or
    lone surrogates)."""
    if not isinstance(value, str):
        raise ValueError(f"a stop reason must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError("a stop reason must not be empty or blank")
    if len(value) > MAX_STOP_REASON:
        raise ValueError(f"a stop reason must be at most {MAX_STOP_REASON} characters, not {len(value)}")
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cs"):
            raise ValueError(
                f"a stop reason must not contain control characters or lone surrogates (found {ch!r})"
            )
    return value


def storable_text(text: str) -> str:
    """``text`` with NUL removed and lone surrogates replaced by U+FFFD, so that the registry
    database always stores it (error details and tracebacks: a crash report is never refused)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE.sub("\ufffd", text)
    return text


def json_object(value: object, what: str, max_bytes: int) -> dict[str, Any]:
    """``value`` as it will come back from the registry (a JSON object), or StateNotSerializable."""
    if not isinstance(value, dict):
        raise StateNotSerializable(f"{what} must be a dict (a JSON object), not {type(value).__name__}")
    decoded: dict[str, Any] = json_value(value, what, max_bytes)
    return decoded


def json_value(value: object, what: str, max_bytes: int) -> Any:
    """``value`` as it will come back from the registry (any JSON value), or StateNotSerializable.

    Refused: what is not JSON (NaN and infinities included), what is over ``max_bytes`` of UTF-8
    JSON, and strings (keys included) that the registry database cannot store: PostgreSQL refuses
    the NUL character and lone surrogates in jsonb and text.
    """
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise StateNotSerializable(f"{what} is not JSON-serialisable: {exc}") from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        found = exc.object[exc.start : exc.start + 1]
        raise StateNotSerializable(
            f"{what} contains a lone surrogate ({found!r}) in a string or key: "
            "the registry database cannot store lone surrogates (strings must be valid Unicode)"
        ) from None
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise StateNotSerializable(
            f"{what} contains a NUL character ('\\x00') in a string or key: "
            "the registry database cannot store NUL"
        )
    if size > max_bytes:
        raise StateNotSerializable(f"{what} is {size} bytes of JSON, over the limit of {max_bytes}")
    return json.loads(text)
