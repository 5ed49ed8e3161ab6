"""Masking of credentials in URLs, so that passwords never reach logs or command output.

The mask covers whatever the libraries that read the URLs would take for the password:

* SQLAlchemy (the registry's URL) reads ``scheme://user:password@host``: the user runs up to the
  first ":" (it may hold a raw "@" or a space), and the password from there up to the first "@",
  whatever it holds: "/", spaces, ":", "?", "#"...
* kombu and redis-py (the broker's URL) read the password up to the *last* "@" before the path (a
  raw "@" in a password does happen), spaces included.

So a password is masked from the ":" after the user up to the first "@" after it, and on up to the
last "@" before the next "/". A URL that is the whole text (a setting) is read exactly so, line
breaks and all; a URL inside other text (an exception message, a log line, a traceback) ends at the
end of its line. Where the text is ambiguous, more is masked rather than less: in
``http://example.com:8080/path and mail me@example.com`` SQLAlchemy sees the password
``8080/path and mail me``, and so does the mask.

Every URL is read in one pass over the text (each search for the next "@", "/" or line end resumes
where the last one stopped), so long inputs stay linear.
"""

from __future__ import annotations

import re

# A scheme may start only where a run of scheme characters starts (SQLAlchemy takes \w and "+";
# "." and "-" are RFC 3986's).
_SCHEME = re.compile(r"(?<![\w+.\-])[\w+.\-]+://")
_USER_IN_TEXT = re.compile(r"[^:/\r\n]*")  # SQLAlchemy's user, within a line
_USER_ALONE = re.compile(r"[^:/]*")  # SQLAlchemy's user
_AT = re.compile("@")
_SLASH = re.compile("/")
_LINE_END = re.compile(r"[\r\n]")

MASK = "***"


class _Next:
    """The first match of ``pattern`` at or after a position (``len(text)`` if none), for
    positions that never decrease: each search resumes past the last one, so the text is scanned
    once in all."""

    def __init__(self, text: str, pattern: re.Pattern[str]) -> None:
        self._text = text
        self._pattern = pattern
        self._found = -1

    def __call__(self, pos: int) -> int:
        if self._found < pos:
            match = self._pattern.search(self._text, pos)
            self._found = match.start() if match else len(self._text)
        return self._found


def _password_spans(text: str) -> list[tuple[int, int]]:
    """The spans of ``text`` to mask: each from a password's first character to the "@" after it."""
    next_at, next_slash, next_line_end = _Next(text, _AT), _Next(text, _SLASH), _Next(text, _LINE_END)
    spans: list[tuple[int, int]] = []
    for scheme in _SCHEME.finditer(text):
        alone = scheme.start() == 0  # the whole text is this URL, as SQLAlchemy would read it
        user = (_USER_ALONE if alone else _USER_IN_TEXT).match(text, scheme.end())
        user_end = user.end() if user else scheme.end()  # always a match (maybe empty)
        if user_end == len(text) or text[user_end] != ":":
            continue  # no password: the user ran into a "/" (the path) or the end of the line
        start = user_end + 1
        stop = len(text) if alone else next_line_end(start)
        end = next_at(start)  # SQLAlchemy: the password ends at the first "@"
        if end >= stop:
            continue  # no "@" after the ":": a port, not a password
        netloc_end = min(next_slash(scheme.end()), stop)
        if netloc_end > end:  # kombu: at the last "@" before the path
            end = text.rfind("@", end, netloc_end)
        if spans and start <= spans[-1][1]:  # a URL inside the password of the one before
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


def redact_url(text: str) -> str:
    """Mask every URL password in ``text``: ``scheme://user:secret@host`` -> ``scheme://user:***@host``."""
    spans = _password_spans(text)
    if not spans:
        return text
    parts: list[str] = []
    done = 0
    for start, end in spans:
        parts += [text[done:start], MASK]
        done = end
    parts.append(text[done:])
    return "".join(parts)
