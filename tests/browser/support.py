"""What the browser tests share besides fixtures: waits on the page, a WSGI app served on a thread,
and the example Django project's environment and ``manage.py``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING

import sqlalchemy as sa
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from tests.harness import ROOT, Stack

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

DJANGO_PROJECT = ROOT / "examples" / "django_project"
#: the Django settings the example project runs with here: its own, plus the session's Redis prefix
DJANGO_SETTINGS = "tests.browser.django_settings"
#: Flower's address, for the admin's links to tasks (the example project reads ``FLOWER_URL``;
#: nothing needs to answer there)
FLOWER_URL = "http://127.0.0.1:5555"


def wait_until(browser: WebDriver, timeout: float = 30.0) -> WebDriverWait[WebDriver]:
    """Selenium's bounded wait on the browser (for conditions on the page)."""
    return WebDriverWait(browser, timeout, poll_frequency=0.1)


def visible(browser: WebDriver, css: str, timeout: float = 30.0) -> None:
    """Wait until an element matching ``css`` is shown."""
    shown = expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css))
    wait_until(browser, timeout).until(shown, f"{css} was not shown on {browser.current_url}")


def submitted(browser: WebDriver, element: WebElement) -> None:
    """Click ``element`` (a submit button or a link) and wait for the next page to load."""
    body = browser.find_element(By.TAG_NAME, "body")
    element.click()
    wait_until(browser).until(lambda _b: gone(body))
    wait_until(browser).until(lambda b: b.execute_script("return document.readyState") == "complete")


def gone(element: WebElement) -> bool:
    """Whether ``element``'s page was replaced. Chromium reports an element of a page being left
    either as stale or, mid-navigation, with "Node with given id does not belong to the document"
    (a WebDriverException that Selenium's ``staleness_of`` does not expect: it failed a CI run)."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc.msg):
            return True
        raise
    return False


# -- a WSGI app on a thread ------------------------------------------------------------------------


@contextlib.contextmanager
def serving(app: WSGIApplication) -> Iterator[str]:
    """``app`` served on 127.0.0.1 (a port the system picks) by werkzeug on a thread; yields its
    base URL, without a trailing slash."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


# -- the Django example ----------------------------------------------------------------------------


def django_env(stack: Stack) -> dict[str, str]:
    """The environment the example project runs in on the stack: its database in ``POSTGRES_*``
    (the registry's URL derived from ``DATABASES["default"]``, as the example does), the stack's
    broker, queue and timings, the session's Redis key prefix, and Flower's address."""
    database = sa.make_url(stack.database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKING_", "CELERY_", "DJANGO_"))}
    env.update(stack.web_env())
    del env["TRACKING_DATABASE_URL"]
    env.update(
        PYTHONPATH=str(ROOT),
        DJANGO_SETTINGS_MODULE=DJANGO_SETTINGS,
        POSTGRES_DB=database.database or "",
        POSTGRES_USER=database.username or "",
        POSTGRES_HOST=database.host or "",
        POSTGRES_PORT=str(database.port or ""),
        TEST_REDIS_PREFIX=stack.redis_prefix or "",
        FLOWER_URL=FLOWER_URL,
    )
    return env


def manage_py(stack: Stack, *args: str, **env: str) -> str:
    """``python manage.py ARGS...`` of the example project on the stack; its output. A failure
    says what the command printed."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=DJANGO_PROJECT,
        env={**django_env(stack), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False


def admin_login(browser: WebDriver, base_url: str, username: str, password: str) -> None:
    """Log in through the admin's login form; returns on the admin's index page."""
    browser.get(f"{base_url}/admin/login/?next=/admin/")
    browser.find_element(By.ID, "id_username").send_keys(username)
    browser.find_element(By.ID, "id_password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    visible(browser, "#user-tools")
