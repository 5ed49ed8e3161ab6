"""How one mounted blueprint behaves: the permission hook that guards every page and action, the
sizes and patience of its pages, and the same-origin check of a POST (its CSRF defence); and the
request at hand: the app's client, whether the JSON API was asked."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from urllib.parse import urlsplit

from flask import current_app, request
from werkzeug.exceptions import Forbidden, UnsupportedMediaType

from tracking.client import Client
from tracking.contrib.flask.extension import EXTENSION_KEY

#: the actions the pages offer, in the order of their buttons
ACTIONS = ("stop", "restart", "start-afresh")
#: the URL converter of an action's route
ACTION = "any({})".format(", ".join(f"'{a}'" for a in ACTIONS))
#: what the permission hook is asked before a page or the API shows anything
VIEW = "view"
#: ``permission(action, kind, transaction_id) -> bool``: ``action`` is ``"view"`` or one of
#: ``ACTIONS``; ``kind`` and ``transaction_id`` are None where a list asks (no filter set)
Permission = Callable[[str, str | None, str | None], bool]


def read_only(action: str, kind: str | None, transaction_id: str | None) -> bool:
    """The default permission: anyone who reaches the pages may look, nobody may act."""
    return action == VIEW


@dataclasses.dataclass(frozen=True)
class Options:
    """How one mounted blueprint behaves (the arguments of :func:`~.views.blueprint`)."""

    permission: Permission = read_only
    page_size: int = 50
    max_page_size: int = 200
    stop_timeout: float = 5.0
    trusted_origins: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= self.max_page_size:
            raise ValueError("page_size must be between 1 and max_page_size")
        if self.stop_timeout < 0:
            raise ValueError("stop_timeout must not be negative")


def cross_site(
    origin: str | None, referer: str | None, own: str, trusted: frozenset[str], *, api: bool
) -> str | None:
    """Why a POST with these ``Origin`` and ``Referer`` headers looks cross-site (None if it does
    not); ``own`` is the request's own origin (``scheme://host``). A browser sends ``Origin`` with
    every cross-site POST; the ``Referer`` is the fallback. A form must carry one of them; an API
    call without either (curl, a script) is accepted, since its JSON body is something a
    cross-site form cannot send."""
    allowed = {own, *trusted}
    if origin is not None:
        return None if origin in allowed else f"the request comes from another origin ({origin})"
    if referer:
        parts = urlsplit(referer)
        found = f"{parts.scheme}://{parts.netloc}"
        return None if found in allowed else f"the request comes from another origin ({found})"
    return None if api else "the request has neither an Origin nor a Referer header"


def allow(options: Options, action: str, kind: str | None, transaction_id: str | None) -> None:
    """Go on only if the permission hook allows ``action``: a 403 otherwise."""
    if not options.permission(action, kind, transaction_id):
        what = "view trackers" if action == VIEW else action.replace("-", " ")
        target = f" {kind} {transaction_id!r}" if transaction_id is not None else ""
        raise Forbidden(f"You are not allowed to {what}{target}.")


def refuse_cross_site_posts(options: Options) -> None:
    """Before every request of the blueprint: a POST must pass the same-origin check, and a POST
    to the API must carry JSON (which a cross-site form cannot send)."""
    if request.method != "POST":
        return
    if is_api() and not request.is_json:
        raise UnsupportedMediaType("send a JSON body (Content-Type: application/json)")
    own = request.host_url.rstrip("/")
    origin, referer = request.headers.get("Origin"), request.headers.get("Referer")
    refused = cross_site(origin, referer, own, options.trusted_origins, api=is_api())
    if refused is not None:
        raise Forbidden(f"Cross-site request refused: {refused}.")


def client() -> Client:
    """The current app's client (the extension's)."""
    found: Client = current_app.extensions[EXTENSION_KEY].client
    return found


def is_api() -> bool:
    """Whether the request is one of the JSON API's (its endpoints are named ``api_*``)."""
    return (request.endpoint or "").rpartition(".")[2].startswith("api_")
