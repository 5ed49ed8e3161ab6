"""Passwords in URLs are masked wherever they appear, including passwords with a raw "@", "/", ":"
or a space: the mask covers whatever SQLAlchemy (the registry's URL) or kombu (the broker's URL)
would read as the password."""

from __future__ import annotations

import contextlib
import time
import traceback
from typing import Final

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from kombu.utils.url import url_to_parts
from sqlalchemy.engine import make_url

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
    "a URL inside the password of another": ("a://u:x b://v:pw@y@h/", "a://u:***@h/"),
    "a URL on each line": (
        "db postgresql://a:x@y@h/db\nbroker amqp://b:z@h//",
        "db postgresql://a:***@h/db\nbroker amqp://b:***@h//",
    ),
    # SQLAlchemy reads a password up to the first "@", whatever it holds ("/", spaces, "?", "#").
    "a slash in the password": (
        "postgresql+psycopg://app:ab/cd@db/app",
        "postgresql+psycopg://app:***@db/app",
    ),
    "a slash in a broker password": ("redis://:pa/ss@host:6379/0", "redis://:***@host:6379/0"),
    "a space in the password": ("amqp://guest:pa ss@host//", "amqp://guest:***@host//"),
    "a slash, a space and colons in the password": (
        "postgresql://u:a/b c:d://e@h:5432/db",
        "postgresql://u:***@h:5432/db",
    ),
    "a question mark and a hash in the password": ("amqp://u:p?x#y@h//", "amqp://u:***@h//"),
    "a slash in the password in an exception message": (
        'connection to postgresql+psycopg://app:ab/cd@db/app failed: FATAL: password failed for "app"',
        'connection to postgresql+psycopg://app:***@db/app failed: FATAL: password failed for "app"',
    ),
    "a space in the password in a log line": (
        "broker amqp://guest:pa ss@host// unreachable, retrying",
        "broker amqp://guest:***@host// unreachable, retrying",
    ),
    "a line break in the password of a URL on its own": (
        "postgresql://u:pa\nss@h/db",
        "postgresql://u:***@h/db",
    ),
    # kombu reads a password up to the last "@" before the path, spaces included.
    "a raw @ after a space in the password": ("amqp://u:a@b c@h//", "amqp://u:***@h//"),
    # SQLAlchemy and kombu both read a user up to the first ":", a raw "@" included.
    "a raw @ in the user": ("postgresql://a@b:secret@h/db", "postgresql://a@b:***@h/db"),
    "a space in the user": ("x postgresql://my user:secret@h/db", "x postgresql://my user:***@h/db"),
    "a non-ASCII scheme": ("dbé://u:secret@h/x", "dbé://u:***@h/x"),
    # SQLAlchemy reads this as user "example.com", password "8080/path and mail me", host "example.com".
    "a port and a path then a later @": (
        "http://example.com:8080/path and mail me@example.com",
        "http://example.com:***@example.com",
    ),
}

UNTOUCHED = [
    "",
    "no URL at all",
    "amqp://guest@127.0.0.1//",
    "http://example.com:8080/path",
    "mail me@example.com about http://example.com:8080/path",
    "see http://example.com:8080/path\nand mail me@example.com",
    "redis://127.0.0.1:6379/0",
    "redis://u@127.0.0.1:6379/0",
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


def test_a_url_in_a_traceback_is_masked_and_the_rest_of_the_traceback_kept() -> None:
    url = "postgresql+psycopg://app:s3/cr et:x@db:5432/app"

    def connect() -> None:
        raise RuntimeError(f"cannot connect to {url}: timeout")

    try:
        connect()
    except RuntimeError as exc:
        text = "".join(traceback.format_exception(exc))
    masked = redact_url(text)
    assert "s3/cr et:x" not in masked and "cr et" not in masked
    assert "cannot connect to postgresql+psycopg://app:***@db:5432/app: timeout" in masked
    assert masked.replace("app:***@db", "app:s3/cr et:x@db") == text, "nothing else is touched"


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


# -- any password SQLAlchemy or kombu would read is masked ---------------------------------------------

_PRINTABLE: Final = ("L", "M", "N", "P", "S", "Zs")  # no control, format or line-break characters


def _read_passwords(url: str) -> set[str]:
    """The passwords SQLAlchemy and kombu read in ``url`` (either may refuse it: a port that is no int)."""
    found: set[str | None] = set()
    with contextlib.suppress(Exception):
        found.add(make_url(url).password)
    with contextlib.suppress(Exception):
        found.add(url_to_parts(url).password)
    return {pw for pw in found if pw is not None}


_schemes = st.sampled_from(["postgresql", "postgresql+psycopg", "sqlite", "redis", "rediss", "amqp", "my_db"])
_hosts = st.from_regex(r"[a-z0-9.\-]{1,12}(:[0-9]{1,5})?", fullmatch=True)
_paths = st.sampled_from(["", "/", "/db", "//", "/0?ssl=true", "/db?user=a@b", "/a b@c"])


def _check(scheme: str, user: str, password: str, host: str, path: str, text: str) -> None:
    """``password`` is not in ``text`` with the URL in it redacted, if SQLAlchemy or kombu reads it."""
    prefix, suffix = f"{scheme}://{user}:", f"@{host}{path}"
    assume(password in _read_passwords(prefix + password + suffix))
    # A short password, or one that is also part of the rest of the text, is no evidence of a leak.
    # (A password has no "*": it cannot straddle the mask either.)
    assume(len(password) >= 6 and password not in text.replace("{url}", prefix + suffix))
    assert password not in redact_url(text.replace("{url}", prefix + password + suffix))


@settings(max_examples=500, deadline=None, database=None)
@given(
    scheme=_schemes,
    user=st.text(st.characters(categories=_PRINTABLE, exclude_characters=":/%"), max_size=8),
    password=st.text(st.characters(categories=_PRINTABLE, exclude_characters="%*"), min_size=6, max_size=20),
    host=_hosts,
    path=_paths,
    text=st.sampled_from(
        ["{url}", "failed: {url} (x)", "url='{url}'", "a\n{url}\nb", "{url} and amqp://g:pw@h//"]
    ),
)
@example(
    scheme="postgresql+psycopg",
    user="app",
    password="ab/cd x",
    host="db",
    path="/app",
    text="failed: {url} (x)",
)
@example(scheme="amqp", user="guest", password="pa ss@w0rd", host="h", path="//", text="{url}")
def test_a_printable_password_that_sqlalchemy_or_kombu_reads_never_survives_redaction(
    scheme: str, user: str, password: str, host: str, path: str, text: str
) -> None:
    _check(scheme, user, password, host, path, text)


@settings(max_examples=300, deadline=None, database=None)
@given(
    scheme=_schemes,
    user=st.text(st.characters(exclude_characters=":/%"), max_size=8),
    password=st.text(st.characters(exclude_characters="%*"), min_size=6, max_size=20),
    host=_hosts,
    path=_paths,
)
@example(scheme="postgresql", user="u", password="pa\nss\r\tw0rd", host="h", path="/db")
def test_any_password_of_a_url_on_its_own_never_survives_redaction(
    scheme: str, user: str, password: str, host: str, path: str
) -> None:
    """A URL on its own (a setting) is read as SQLAlchemy reads it, line breaks and all."""
    _check(scheme, user, password, host, path, "{url}")
