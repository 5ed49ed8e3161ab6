"""The web UIs in a real browser: Debian's headless Chromium driven by Selenium, against the
examples' apps served on loopback, on a stack with real workers.

- ``browser``: a headless Chromium of each test's own (a fresh profile: no cookies carried over),
  its viewport 1280x900. A missing Chromium or chromedriver is a failure, never a skip, as a missing
  service is: ``bash scripts/setup browser`` installs them (``.ci/run`` does, before this step).
- ``screenshot(name)``: the page as ``<name>.png``, in docs/screenshots/ when ``UPDATE_SCREENSHOTS=1``
  (what refreshes the docs' pictures), else in the test's temporary folder (a run leaves the
  checkout as it was).
- ``flask_app`` / ``flask_server``: the Flask example app (examples/flask_app) configured from the
  stack's environment as in production, served by werkzeug on a thread on 127.0.0.1.
- ``django_server``: the Django example project (examples/django_project) on the stack's database,
  served by ``manage.py runserver`` in a process of its own: Django can be set up only once per
  process, and tests/contrib/test_django.py sets it up in the test process with its own stack's
  database. Users are made with ``manage.py`` (``django_user``).

Modules here are marked ``browser`` (left out of the main run; ``scripts/test -m browser`` runs
them) and choose their stack and cluster with the harness's markers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

from examples.flask_app.app import create_app
from tests.browser.support import DJANGO_PROJECT, answers, django_env, manage_py, serving
from tests.harness import ROOT, Stack, current_celery_app_restored, free_port, wait_for

SCREENSHOTS = ROOT / "docs" / "screenshots"
WIDTH, HEIGHT = 1280, 900
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-dev-shm-usage",  # containers have a small /dev/shm
    f"--window-size={WIDTH},{HEIGHT}",
    "--no-first-run",
    "--disable-background-networking",  # nothing leaves the machine but the pages' own requests
    "--disable-component-update",
)


@pytest.fixture(scope="module", autouse=True)
def _restore_the_current_celery_app() -> Iterator[None]:
    """Each module puts back the Celery app (and client) that was current before it."""
    with current_celery_app_restored():
        yield


# -- the browser -------------------------------------------------------------------------------------


def chromium_binaries() -> tuple[str, str]:
    """Chromium and its driver, found on the PATH; a failure (not a skip) when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail(
            "the browser tests need Debian's chromium and chromium-driver: bash scripts/setup browser",
            pytrace=False,
        )
    return chromium, driver


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile, its viewport exactly WIDTH x HEIGHT."""
    chromium, driver_path = chromium_binaries()
    options = webdriver.ChromeOptions()
    for argument in CHROMIUM_ARGS:
        options.add_argument(argument)
    options.binary_location = chromium
    # The driver's path is given, so Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        # --window-size is the window's; the page gets less. Screenshots are the viewport.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshot(browser: WebDriver, tmp_path: Path) -> Callable[[str], Path]:
    """``screenshot(name)`` saves the browser's viewport as <name>.png (see the module's doc)."""
    folder = SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path

    def save(name: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        assert browser.save_screenshot(str(path)), f"no screenshot saved at {path}"
        return path

    return save


# -- the Flask example -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flask_app(stack: Stack) -> Flask:
    """The example app, configured from the stack's environment as in production (and the test
    session's Redis key prefix through its ``CELERY`` settings), its actions allowed."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in stack.web_env().items():
            mp.setenv(key, value)
        return create_app(
            {
                "TESTING": True,
                "SECRET_KEY": "browser-tests",
                "UI_ACTIONS": True,
                "CELERY": {"broker_transport_options": stack.transport_options()},
            }
        )


@pytest.fixture(scope="module")
def flask_server(flask_app: Flask) -> Iterator[str]:
    """The example app's base URL, served on a thread."""
    with serving(flask_app) as url:
        yield url


# -- the Django example ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_server(stack: Stack) -> Iterator[str]:
    """The example project migrated on the stack's database and served by ``manage.py runserver``
    (its static files too, for the admin's looks); yields its base URL."""
    manage_py(stack, "migrate", "--verbosity", "0")
    port = free_port()
    log_path = stack.folder / "django-server.log"
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload", "--insecure"],
            cwd=DJANGO_PROJECT,
            env=django_env(stack),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"the Django server exited:\n{log_path.read_text()[-3000:]}")
            return answers(f"{url}/admin/login/")

        wait_for(ready, timeout=60, interval=0.2, what="the Django server to answer")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


@pytest.fixture(scope="module")
def django_user(stack: Stack, django_server: str) -> Callable[..., tuple[str, str]]:
    """``django_user(username, superuser=False, permissions=())`` makes a staff user of the
    example project with the given permissions (``app_label.codename``); returns its username
    and password, for the admin's login form."""
    password = "a-long-browser-password"

    def make(username: str, superuser: bool = False, permissions: tuple[str, ...] = ()) -> tuple[str, str]:
        code = (
            "import os\n"
            "from django.contrib.auth.models import Permission, User\n"
            "user = User(username=os.environ['USERNAME_'], is_staff=True,"
            " is_superuser=os.environ['SUPERUSER_'] == '1')\n"
            "user.set_password(os.environ['PASSWORD_'])\n"
            "user.save()\n"
            "for name in filter(None, os.environ['PERMISSIONS_'].split(',')):\n"
            "    label, codename = name.split('.')\n"
            "    user.user_permissions.add(\n"
            "        Permission.objects.get(content_type__app_label=label, codename=codename))\n"
        )
        manage_py(
            stack,
            "shell",
            "--command",
            code,
            USERNAME_=username,
            PASSWORD_=password,
            SUPERUSER_="1" if superuser else "0",
            PERMISSIONS_=",".join(permissions),
        )
        return username, password

    return make


