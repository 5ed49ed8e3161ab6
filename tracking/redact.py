"""Masking of credentials in URLs, so that passwords never reach logs or command output."""

from __future__ import annotations

import re

# A password runs to the last "@" before the host (a host has no "@"; a raw "@" in a password does
# happen), and never past a "/" or whitespace, so two URLs in one text are masked separately. The
# scheme may start only where a run of scheme characters starts: each run is scanned once, and no
# quantifier is nested in another, so long inputs stay linear.
_USERINFO = re.compile(
    r"(?<![a-zA-Z0-9+.\-])(?P<scheme>[a-zA-Z0-9+.\-]+://)(?P<user>[^:/@\s]*):(?P<password>[^/\s]*)@"
)


def redact_url(text: str) -> str:
    """Mask every URL password in ``text``: ``scheme://user:secret@host`` -> ``scheme://user:***@host``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
