"""The admin's workers page: the worker processes with a row in the registry, with the age of their
lease, and the supervisors' last sweeps (so that "nobody is supervising" shows).

A page of the tracker admin (``/admin/tracking/tracker/workers/``, URL name
``admin:tracking_tracker_workers``), for the users who may view trackers. It reads the registry
through the project's client (``Client.workers``, ``Client.last_sweeps``).
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse

from tracking.exceptions import RegistryRefused, RegistryUnavailable

TEMPLATE = "admin/tracking/workers.html"


def workers_view(model_admin: Any, request: HttpRequest) -> TemplateResponse:
    """The page; 403 for a user who may not view trackers."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    config = apps.get_app_config("tracking")
    context: dict[str, Any] = {
        **model_admin.admin_site.each_context(request),
        "title": "Workers and supervisor sweeps",
        "opts": model_admin.opts,
        "lease_seconds": config.settings.lease_seconds,
        "sweep_seconds": config.settings.sweep_seconds,
        "workers": [],
        "sweeps": [],
        "error": None,
    }
    try:
        context["workers"] = config.client.workers()
        context["sweeps"] = config.client.last_sweeps()
    except (RegistryUnavailable, RegistryRefused) as exc:
        context["error"] = str(exc)
    return TemplateResponse(request, TEMPLATE, context)
