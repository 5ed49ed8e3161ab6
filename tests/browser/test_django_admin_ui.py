"""The Django admin of trackers in headless Chromium: the example project (examples/django_project)
served on the stack's PostgreSQL database, with a real worker on PostgreSQL + Redis."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from tests.browser.support import DJANGO_PROJECT, admin_login, visible
from tests.harness import Cluster, wait_for
from tracking import Status, TrackerRef
from tracking import client as clients

KIND = "transaction"
FOREVER = 1_000_000  # confirmations no test waits for
CHANGELIST = "/admin/tracking/tracker/"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.stacks("postgres-redis", imports="transactions.trackers", pythonpath=(str(DJANGO_PROJECT),)),
    pytest.mark.cluster(workers=("w1",), beat=True),
]


def lookup(txid: str) -> TrackerRef | None:
    """The registry's entry, read by the test process (on the stack, as the project's workers)."""
    return clients.current().lookup(KIND, txid)


def track(base_url: str, txid: str, confirmations: int = FOREVER) -> None:
    """Start tracking through the example project's own JSON view."""
    request = urllib.request.Request(
        f"{base_url}/transactions/{txid}/track",
        data=json.dumps({"confirmations": confirmations}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


def runs(txid: str) -> Callable[[], TrackerRef | None]:
    """A condition for ``wait_for``: the tracker runs and has checkpointed."""

    def condition() -> TrackerRef | None:
        ref = lookup(txid)
        if ref is None or ref.status is not Status.RUNNING:
            return None
        return ref if clients.current().get_state(KIND, txid) is not None else None

    return condition


@pytest.fixture(scope="module")
def superuser(django_user: Callable[..., tuple[str, str]]) -> tuple[str, str]:
    return django_user("admin", superuser=True)


@pytest.fixture
def started(django_server: str, cluster: Cluster) -> Iterator[list[str]]:
    """Two running trackers (stopped at the end, if still there)."""
    txids = ["txn_browser_admin_1", "txn_browser_admin_2"]
    for txid in txids:
        track(django_server, txid)
    for txid in txids:
        wait_for(runs(txid), what=f"{txid} to run")
    yield txids
    for txid in txids:
        if lookup(txid) is not None:
            clients.current().stop(KIND, txid, "normal", 30.0)


def test_the_admin_list_of_trackers_shows_the_running_trackers_to_a_superuser(
    browser: WebDriver,
    screenshot: Callable[[str], Path],
    django_server: str,
    superuser: tuple[str, str],
    started: list[str],
) -> None:
    admin_login(browser, django_server, *superuser)
    browser.get(f"{django_server}{CHANGELIST}")
    visible(browser, "#result_list")

    listed = {cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#result_list tbody th")}
    assert set(started) <= listed
    screenshot("django-admin-trackers")
