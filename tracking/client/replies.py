"""How a caller learns that its call was answered.

On PostgreSQL the tracker's ``registry.handled`` announces each answer on ``registry.REPLY_CHANNEL``.
A process listens on one connection of its own (application ``tracking-<pid>-replies``), opened by
its first call and shared by every thread or greenlet that waits for an answer: a waiter sleeps
until its message's announcement, then takes the answer in one read. The listener closes after
``IDLE`` seconds without a call, and whenever its connection breaks (every waiter then reads the
registry at once, and polls until its answer comes; the next call listens again). Where answers
are not announced (SQLite, another driver), or no listener could connect, the caller polls.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time

from tracking import registry
from tracking.exceptions import RegistryUnavailable
from tracking.models import MessageStatus
from tracking.registry import wakeups
from tracking.settings import Settings

log = logging.getLogger("tracking.client")

#: how long a waiter trusts the listener before it reads the registry anyway (seconds): the safety
#: net for an announcement lost, which a listener that broke would have told it about anyway
PATIENCE = 1.0
#: how long a listener nobody used stays open (seconds)
IDLE = 60.0
#: how long one wait for notifications lasts: how soon an idle listener sees that it may close
POLL = 1.0
#: announcements kept for callers that have not started waiting yet (every process hears every
#: answer: the others' are dropped, oldest first)
EARLY = 4096
#: after a failed connection, how long callers poll before another is tried (seconds)
RETRY_PAUSE = 1.0


class Replies:
    """The answers announced to this process, for one registry database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._waiting: dict[int, threading.Event] = {}
        #: the waiters' messages announced (not those woken because the listener broke)
        self._announced: set[int] = set()
        self._early: collections.OrderedDict[int, None] = collections.OrderedDict()
        #: the live listener, and its generation (each new connection gets the next)
        self._listener: wakeups.WakeupListener | None = None
        self._generation = 0
        self._used = time.monotonic()
        self._not_before = 0.0

    @property
    def waiters(self) -> int:
        """How many callers wait for an announcement now."""
        with self._lock:
            return len(self._waiting)

    def listening(self) -> int | None:
        """Listen for answers unless this process does already, before a call is queued (so its
        answer cannot be missed); the listener's generation, for ``wait``. None when answers are
        not announced here: the caller polls."""
        with self._lock:
            now = self._used = time.monotonic()
            if self._listener is not None:
                return self._generation
            if now < self._not_before:
                return None
            try:
                listener = wakeups.listen(self.settings, registry.REPLY_CHANNEL, "replies")
            except RegistryUnavailable as exc:
                log.warning("not listening for replies, polling instead: %s", exc)
                self._not_before = now + RETRY_PAUSE
                return None
            if listener is None:  # this registry announces nothing
                self._not_before = math.inf
                return None
            self._listener, self._generation = listener, self._generation + 1
            generation = self._generation
        threading.Thread(
            target=self._run, args=(listener, generation), name="tracking-replies", daemon=True
        ).start()
        return generation

    def live(self, generation: int) -> bool:
        """Whether the listener of ``generation`` still listens (if not, the caller polls)."""
        with self._lock:
            return self._listener is not None and self._generation == generation

    def wait(self, generation: int, message_id: int, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the answer to ``message_id`` to be announced; True
        if it was. Returns early if the listener of ``generation`` is gone (see ``live``)."""
        with self._lock:
            if self._listener is None or self._generation != generation:
                return False
            if message_id in self._early:
                del self._early[message_id]
                return True
            event = self._waiting[message_id] = threading.Event()
        try:
            event.wait(timeout)
        finally:
            with self._lock:
                self._waiting.pop(message_id, None)
                announced = message_id in self._announced
                self._announced.discard(message_id)
        return announced

    def _run(self, listener: wakeups.WakeupListener, generation: int) -> None:
        try:
            while True:
                for message_id, _ in listener.notifications(POLL):
                    self._announce(message_id)
                with self._lock:
                    if not self._waiting and time.monotonic() - self._used > IDLE:
                        self._listener = None  # in the same breath: no caller counts on it now
                        return
        except RegistryUnavailable as exc:
            log.warning("%s", exc)
        finally:
            with self._lock:
                if self._generation == generation:
                    self._listener = None
                waiting = list(self._waiting.values())
            for event in waiting:  # they read the registry now, and poll from then on
                event.set()
            listener.close()

    def _announce(self, message_id: int) -> None:
        with self._lock:
            event = self._waiting.get(message_id)
            if event is None:
                self._early[message_id] = None
                if len(self._early) > EARLY:
                    self._early.popitem(last=False)
                return
            self._announced.add(message_id)
        event.set()

    def answer(self, listening: int | None, message_id: int, timeout: float) -> registry.Reply | None:
        """The answer to call ``message_id`` (None: gone with its tracker), taken as soon as it is
        announced (or, where it is not, found by polling); a queued reply if the call was withdrawn
        unanswered after ``timeout`` seconds. ``listening``: what :meth:`listening` gave before the
        call was queued."""
        settings = self.settings
        began = time.monotonic()
        deadline = began + timeout
        while True:
            now = time.monotonic()
            if now >= deadline:
                if registry.withdraw(settings, message_id):
                    return registry.Reply(MessageStatus.QUEUED, None, None)
                return registry.take_reply(settings, message_id)  # answered just now
            if listening is not None and self.live(listening):
                self.wait(listening, message_id, min(deadline - now, PATIENCE))
            else:
                listening = None
                # Poll closely while a prompt answer is likely, then back off.
                time.sleep(min(0.002 if now - began < 0.1 else 0.02, deadline - now))
            answer = registry.take_reply(settings, message_id)
            if answer is None or answer.status is not MessageStatus.QUEUED:
                return answer


_all: dict[str, Replies] = {}
_all_lock = threading.Lock()


def replies(settings: Settings) -> Replies:
    """This process's answers for the registry of ``settings``."""
    found = _all.get(settings.database_url)
    if found is None:
        with _all_lock:
            found = _all.setdefault(settings.database_url, Replies(settings))
    return found


def _forget_after_fork() -> None:
    # A forked child listens on connections of its own (its parent's socket is not its to use).
    global _all_lock
    _all.clear()
    _all_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
