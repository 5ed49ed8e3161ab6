"""Passwords in URLs are masked wherever they appear, including passwords with a raw "@"."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracking.redact import redact_url

MASKED = {
    "a plain password": ("amqp://guest:s3cret@127.0.0.1:5672/v", "amqp://guest:***@127.0.0.1:5672/v"),
    "a raw @ in the password": (
        "postgresql://u:p@ss@127.0.0.1:5432/db",
        "postgresql://u:***@127.0.0.1:5432/db",
    ),
    "several raw @ in the password": ("redis://:a@b@@c@h:6379/0", "redis://:***@h:6379/0"),
    "a raw @ and no path": ("redis://u:p@ss@h", "redis://u:***@h"),
    "a driver in the scheme": (
        "failed: postgresql+psycopg://app:hun@ter2@127.0.0.1/db refused",
        "failed: postgresql+psycopg://app:***@127.0.0.1/db refused",
    ),
    "no user": ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    "a colon in the password": ("amqp://u:a:b@h//", "amqp://u:***@h//"),
    "percent-encoding": ("amqp://u:p%40ss@h/v", "amqp://u:***@h/v"),
    "two URLs in one text": (
        "redis://:a@h/0 and amqp://g:b@h2//",
        "redis://:***@h/0 and amqp://g:***@h2//",
    ),
    "two URLs with raw @ in one text": (
        "redis://:a@x@h/0 and amqp://g:b@y@h2//",
        "redis://:***@h/0 and amqp://g:***@h2//",
    ),
    "two URLs without paths": ("redis://:a@h amqp://g:b@h2", "redis://:***@h amqp://g:***@h2"),
    "a URL in quotes": ("url='redis://:p@ss@h/0' failed", "url='redis://:***@h/0' failed"),
    "a URL after a dash": ("-redis://u:p@h/0", "-redis://u:***@h/0"),
    "a URL on each line": (
        "db postgresql://a:x@y@h/db\nbroker amqp://b:z@h//",
        "db postgresql://a:***@h/db\nbroker amqp://b:***@h//",
    ),
}

UNTOUCHED = [
    "",
    "no URL at all",
    "amqp://guest@127.0.0.1//",
    "http://example.com:8080/path and mail me@example.com",
    "redis://127.0.0.1:6379/0",
    "sqlite:///registry.sqlite3",
    "user@host:22 and a:b",
    "embedded://localhost//",
]


@pytest.mark.parametrize(("text", "masked"), MASKED.values(), ids=MASKED.keys())
def test_every_url_password_is_masked_up_to_the_host(text: str, masked: str) -> None:
    assert redact_url(text) == masked


@pytest.mark.parametrize("text", UNTOUCHED)
def test_text_without_a_url_password_is_left_untouched(text: str) -> None:
    assert redact_url(text) == text


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "text",
    [
        "a" * 200_000,
        "a://u:" * 40_000,
        "a://u:" + "@" * 200_000,
        "a://" + ":" * 200_000,
        "x://u:p@" * 30_000,
        ("b64" + "Zm9vYmFy" * 25_000 + " ") * 2,
    ],
    ids=["letters", "schemes and users", "at signs", "colons", "many URLs", "base64"],
)
def test_redaction_stays_fast_on_long_inputs(text: str) -> None:
    began = time.perf_counter()
    redact_url(text)
    assert time.perf_counter() - began < 1.0


_password = st.text(st.characters(exclude_characters="/", exclude_categories=("Zs", "Cc", "Cs")), min_size=1)


@settings(max_examples=300, deadline=None, database=None)
@given(
    user=st.from_regex(r"[a-z0-9._\-]*", fullmatch=True),
    password=_password.filter(lambda p: any(c not in "@:" for c in p)),
    host=st.from_regex(r"[a-z0-9.\-]+(:[0-9]{1,5})?", fullmatch=True),
    path=st.sampled_from(["", "/", "/db", "//", "/0?ssl=true"]),
)
def test_a_password_without_slashes_or_spaces_never_survives_redaction(
    user: str, password: str, host: str, path: str
) -> None:
    url = f"postgresql://{user}:{password}@{host}{path}"
    assert redact_url(f"failed: {url} (x)") == f"failed: postgresql://{user}:***@{host}{path} (x)"
