"""Masking of credentials in URLs, so that passwords never reach logs or command output."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@")


def redact_url(text: str) -> str:
    """Mask every URL password in ``text``: ``scheme://user:secret@host`` -> ``scheme://user:***@host``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
