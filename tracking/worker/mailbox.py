"""How an incarnation handles its mailbox: casts and calls, in order, each exactly once.

Messages are rows of ``tracking_messages`` (see ``registry.enqueue``), so they survive crashes,
restarts and handoffs. An incarnation handles them between ticks, oldest first; each is recorded as
handled in the same transaction as the state it produced, fenced by the incarnation's epoch, so a
message is handled by exactly one incarnation even when one dies half-way (its state is then rolled
back with the mark, and the next incarnation handles the message again).

A handler that raises crashes the tracker, as in OTP; the message that made it crash is dropped
(a call's caller gets ``TrackerCrashed``), so that a poison message cannot crash every restart.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from tracking import registry
from tracking.exceptions import Done
from tracking.models import Entry, Message, MessageType
from tracking.redact import redact_url
from tracking.settings import Settings
from tracking.tracker import Tracker
from tracking.validation import json_object, json_value, storable_text

T = TypeVar("T")
Persist = Callable[[Callable[[], T]], T]

#: messages read from the mailbox at a time
BATCH = 100


class Mailbox:
    """The mailbox of one incarnation."""

    def __init__(self, tracker: Tracker, row: Entry, settings: Settings, persist: Persist[Any]) -> None:
        self.tracker = tracker
        self.row_id = row.id
        self.epoch = row.epoch
        self.handled = row.handled_message_id
        self.settings = settings
        self.persist = persist

    def drain(self, state: dict[str, Any], may_go_on: Callable[[], bool]) -> dict[str, Any]:
        """Handle the queued messages in order while ``may_go_on()``; returns the new state."""
        tracker = self.tracker
        while may_go_on():
            batch = self.persist(
                lambda: registry.mailbox(
                    self.settings, tracker.kind, tracker.transaction_id, after=self.handled, limit=BATCH
                )
            )
            for message in batch:
                if not may_go_on():
                    return state
                state = self._handle(message, state)
            if len(batch) < BATCH:
                # All there was: a message queued after the read brings mail again (its wake-up,
                # or the control poll), so no second read to find the mailbox empty.
                return state
        return state

    def _handle(self, message: Message, state: dict[str, Any]) -> dict[str, Any]:
        limit = self.settings.max_state_bytes
        reply: Any = None
        try:
            if message.type is MessageType.CALL:
                result = self.tracker.handle_call(message.body, state)
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise TypeError("handle_call must return a (reply, state) pair")
                reply = json_value(result[0], "handle_call's reply", limit)
                new = json_object(result[1], "handle_call's state", limit)
            else:
                new = json_object(self.tracker.handle_cast(message.body, state), "handle_cast's state", limit)
        except Done as done:  # a handler may finish the tracker: the message is handled first
            final = json_object(done.state if done.state is not None else state, "Done's state", limit)
            self._record(message.id, final, None, None)
            raise Done(final) from None
        except Exception as exc:
            error = storable_text(redact_url("".join(traceback.format_exception_only(exc)).strip()))
            self._record(message.id, None, None, error)
            raise
        self._record(message.id, new, reply, None)
        return new

    def _record(self, message_id: int, state: dict[str, Any] | None, reply: Any, error: str | None) -> None:
        self.persist(
            lambda: registry.handled(
                self.settings, self.row_id, self.epoch, message_id, state, reply=reply, error=error
            )
        )
        self.handled = message_id
