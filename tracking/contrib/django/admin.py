"""The tracker admin: the registry's entries, what happened to each, and actions an operator takes.

- The list (``/admin/tracking/tracker/``): filter by status and kind, search by transaction ID.
- A tracker's page (``/admin/tracking/tracker/<id>/change/``): its fields, ``tracking explain``
  and its recent history (``table.tracking-history``), read-only.
- Actions on the selected trackers (the ``action`` select of the list; each needs its permission,
  see ``actions.py``): ``stop_trackers`` ("Stop (reason normal)", ``tracking.stop_tracker``),
  ``restart_trackers`` ("Restart now", ``tracking.restart_tracker``) and
  ``start_trackers_afresh`` ("Start a dead tracker afresh", ``tracking.start_tracker``). Each
  reports on every tracker in the page's messages (``ul.messagelist``).
- The workers page (``/admin/tracking/tracker/workers/``, URL name
  ``admin:tracking_tracker_workers``, linked from the list as ``a#tracking-workers-link``; see
  ``workers.py``): ``table#tracking-workers``, a row per worker process (``tr[data-worker-id]``,
  its lease's age in ``td.lease-age``), and ``table#tracking-sweeps``, a row per supervisor
  (``tr[data-supervisor]``).
- With ``TRACKING_FLOWER_URL`` set, task IDs link to Flower's page of the task
  (``a.tracking-flower``, ``{TRACKING_FLOWER_URL}/task/{task_id}``).

Nothing can be added, changed or deleted here: the ORM only reads the registry, and the actions go
through the client (as ``start``, ``stop`` and ``manage.py tracking`` do), which keeps the
registry's invariants.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from django.apps import apps
from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join

from tracking.contrib.django.actions import TrackerActions
from tracking.contrib.django.models import Tracker
from tracking.contrib.django.workers import workers_view
from tracking.exceptions import RegistryRefused, RegistryUnavailable
from tracking.explain import explain

#: the events a tracker's page shows, newest first
HISTORY_LIMIT = 20


@admin.register(Tracker)
class TrackerAdmin(TrackerActions):
    list_display = ("transaction_id", "kind", "status", "restarts", "worker", "task", "started_at")
    list_filter = ("status", "kind")
    search_fields = ("transaction_id",)
    # No second COUNT(*) of the whole table beside the filtered one.
    show_full_result_count = False
    fields = (
        "kind",
        "transaction_id",
        "status",
        "restarts",
        "worker",
        "task",
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
        "history",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        # Before the model's own URLs, whose "<path:object_id>/" would take "workers/".
        name = f"{self.opts.app_label}_{self.opts.model_name}_workers"
        return [path("workers/", self.admin_site.admin_view(self.workers), name=name), *super().get_urls()]

    def workers(self, request: HttpRequest) -> TemplateResponse:
        return workers_view(self, request)

    @admin.display(description="task ID", ordering="task_id")
    def task(self, obj: Tracker) -> str:
        """The Celery task ID of the current incarnation, linked to Flower's page of the task when
        ``TRACKING_FLOWER_URL`` is set."""
        flower = apps.get_app_config("tracking").flower_url
        if not flower:
            return str(obj.task_id)
        href = f"{flower}/task/{urllib.parse.quote(obj.task_id, safe='')}"
        html: str = format_html('<a class="tracking-flower" href="{}">{}</a>', href, obj.task_id)
        return html

    @admin.display(description="why (tracking explain)")
    def explanation(self, obj: Tracker) -> str:
        """What ``tracking explain`` says: why it is (not) running, what happens next, its history."""
        settings = apps.get_app_config("tracking").settings
        try:
            text = explain(settings, obj.kind, obj.transaction_id)
        except (RegistryUnavailable, RegistryRefused) as exc:
            text = str(exc)
        html: str = format_html('<pre style="margin: 0">{}</pre>', text)
        return html

    @admin.display(description="recent history")
    def history(self, obj: Tracker) -> str:
        """The tracker's most recent events (``Client.history``), newest first."""
        client = apps.get_app_config("tracking").client
        try:
            events = client.history(obj.kind, obj.transaction_id, limit=HISTORY_LIMIT)
        except (RegistryUnavailable, RegistryRefused) as exc:
            return str(exc)
        if not events:
            return "no events recorded (they are kept for TRACKING_EVENTS_RETENTION_SECONDS)"
        rows = format_html_join(
            "",
            '<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td style="white-space: pre-wrap">{}</td></tr>',
            (
                (localize(timezone.localtime(e.at)), e.epoch, e.event, e.worker or "", e.detail or "")
                for e in reversed(events)
            ),
        )
        html: str = format_html(
            '<table class="tracking-history"><thead><tr><th>at</th><th>epoch</th><th>event</th>'
            "<th>worker</th><th>detail</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )
        return html
