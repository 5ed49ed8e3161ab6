"""A read-only admin list of trackers: filter by status and kind, search by transaction ID.

Nothing can be added, changed or deleted here: trackers are started and stopped through the API
(``start``, ``stop``) or ``manage.py tracking``, which keep the registry's invariants.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from tracking.contrib.django.models import Tracker
from tracking.exceptions import RegistryUnavailable
from tracking.explain import explain


@admin.register(Tracker)
class TrackerAdmin(admin.ModelAdmin):
    list_display = ("transaction_id", "kind", "status", "restarts", "worker", "task_id", "started_at")
    list_filter = ("status", "kind")
    search_fields = ("transaction_id",)
    # No second COUNT(*) of the whole table beside the filtered one.
    show_full_result_count = False
    actions = None
    fields = (
        "kind",
        "transaction_id",
        "status",
        "restarts",
        "worker",
        "task_id",
        "epoch",
        "started_at",
        "claimed_at",
        "checkpoint_at",
        "due_at",
        "stop_reason",
        "last_error",
        "args",
        "state",
        "policy",
        "explanation",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="why (tracking explain)")
    def explanation(self, obj: Tracker) -> str:
        """What ``tracking explain`` says: why it is (not) running, what happens next, its history."""
        settings = apps.get_app_config("tracking").settings
        try:
            text = explain(settings, obj.kind, obj.transaction_id)
        except RegistryUnavailable as exc:
            text = str(exc)
        html: str = format_html('<pre style="margin: 0">{}</pre>', text)
        return html
