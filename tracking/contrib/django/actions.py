"""The admin's actions on selected trackers: stop, restart now, start a dead one afresh.

Each goes through the project's :class:`~tracking.client.Client` (the same operations as
``manage.py tracking``), never through the ORM, which only reads the registry. Each needs a
permission of its own (``tracking.stop_tracker``, ``tracking.restart_tracker``,
``tracking.start_tracker``): a user without it is not offered the action. Each reports on every
selected tracker in a message of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.apps import apps
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from tracking.client import Client
from tracking.exceptions import NotFound, RegistryRefused, RegistryUnavailable, Timeout, TrackingError
from tracking.models import Status

#: how long "Stop" waits for each tracker to exit, and for all the selected ones together; past
#: that, the stop is recorded and takes effect without the page waiting for it
STOP_SECONDS = 2.0
STOP_BUDGET_SECONDS = 10.0
#: the most trackers one action acts on (one registry operation each)
MAX_SELECTED = 100

#: an outcome: a message level, and what happened to the tracker
Outcome = tuple[int, str]


class TrackerActions(admin.ModelAdmin):
    """The actions and their permissions (the tracker admin's base)."""

    actions = ["stop_trackers", "restart_trackers", "start_trackers_afresh"]

    def has_stop_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("tracking.stop_tracker"))

    def has_restart_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("tracking.restart_tracker"))

    def has_start_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("tracking.start_tracker"))

    @admin.action(description="Stop (reason normal)", permissions=["stop"])
    def stop_trackers(self, request: HttpRequest, queryset: QuerySet) -> None:
        deadline = time.monotonic() + STOP_BUDGET_SECONDS

        def stop(client: Client, kind: str, transaction_id: str) -> Outcome:
            timeout = max(0.0, min(STOP_SECONDS, deadline - time.monotonic()))
            try:
                client.stop(kind, transaction_id, "normal", timeout)
            except Timeout:
                return messages.WARNING, (
                    f"stop requested: it has not exited within {timeout:g} s; the stop stays "
                    "recorded and takes effect"
                )
            return messages.SUCCESS, "stopped"

        self._each(request, queryset, stop)

    @admin.action(description="Restart now", permissions=["restart"])
    def restart_trackers(self, request: HttpRequest, queryset: QuerySet) -> None:
        def restart(client: Client, kind: str, transaction_id: str) -> Outcome:
            ref = client.restart(kind, transaction_id)
            if ref is None:
                return messages.WARNING, "restart requested: it has left the registry"
            if ref.status is Status.RUNNING:
                return messages.SUCCESS, (
                    f"restart requested: incarnation {ref.epoch} exits, and its restart policy "
                    "applies (a temporary tracker is left dead)"
                )
            if ref.status is Status.DEAD:
                return messages.WARNING, "stopped for a restart and left dead (its restart type is temporary)"
            return messages.SUCCESS, f"restarted: {ref.status.value} under epoch {ref.epoch}"

        # refused for a dead one: only a fresh start brings it back
        self._each(request, queryset, restart, refused=' (the action "Start a dead tracker afresh")')

    @admin.action(description="Start a dead tracker afresh", permissions=["start"])
    def start_trackers_afresh(self, request: HttpRequest, queryset: QuerySet) -> None:
        def start_afresh(client: Client, kind: str, transaction_id: str) -> Outcome:
            ref = client.start_afresh(kind, transaction_id)  # refused unless dead
            if ref.on_commit:  # the request is an atomic block (ATOMIC_REQUESTS)
                return messages.SUCCESS, "started afresh once this request's transaction commits"
            return messages.SUCCESS, f"started afresh: {ref.status.value}, epoch {ref.epoch}"

        self._each(request, queryset, start_afresh)

    def _each(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        act: Callable[[Client, str, str], Outcome],
        refused: str = "",
    ) -> None:
        """Run ``act`` on each selected tracker and say what happened to it (``refused`` follows
        the reason when the operation is refused); stop at the first sign that the registry cannot
        be reached (the rest are left untouched, and said so)."""
        selected = list(queryset.order_by("id").values_list("kind", "transaction_id")[: MAX_SELECTED + 1])
        if len(selected) > MAX_SELECTED:
            self.message_user(
                request, f"Select at most {MAX_SELECTED} trackers at once: nothing was done.", messages.ERROR
            )
            return
        client = apps.get_app_config("tracking").client
        for done, (kind, transaction_id) in enumerate(selected):
            try:
                level, text = act(client, kind, transaction_id)
            except NotFound:
                level, text = messages.WARNING, "not registered any more (it finished or was stopped)"
            except (RegistryUnavailable, RegistryRefused) as exc:
                left = len(selected) - done - 1
                self.message_user(request, f"{kind} {transaction_id}: {exc}", messages.ERROR)
                if left:
                    self.message_user(request, f"{left} more left untouched: try again", messages.ERROR)
                return
            except TrackingError as exc:  # refused: its message names the tracker
                self.message_user(request, f"{exc}{refused}", messages.ERROR)
                continue
            self.message_user(request, f"{kind} {transaction_id}: {text}", level)
