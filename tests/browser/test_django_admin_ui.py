"""The Django admin of trackers in headless Chromium: the example project (examples/django_project)
served on the stack's PostgreSQL database, with a real worker on PostgreSQL + Redis.

Users log in through the admin's login form. The worker runs the example's tracker and the
integration tests' ``TemporaryCrasher`` (dead after its first tick), for "Start afresh".
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select

from tests.browser.support import DJANGO_PROJECT, FLOWER_URL, admin_login, submitted, visible, wait_until
from tests.harness import Cluster, observe, wait_for
from tests.integration.trackers import TemporaryCrasher
from tracking import Status, TrackerRef
from tracking import client as clients

KIND = "transaction"
FOREVER = 1_000_000  # confirmations no test waits for
CHANGELIST = "/admin/tracking/tracker/"
#: the permission to see the trackers' pages (each action needs one more)
VIEW = "tracking.view_tracker"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.stacks(
        "postgres-redis",
        imports="transactions.trackers,tests.integration.trackers",
        pythonpath=(str(DJANGO_PROJECT),),
    ),
    pytest.mark.cluster(workers=("w1",), beat=True),
]

User = tuple[str, str]


def entry(kind: str, txid: str) -> TrackerRef | None:
    """The registry's entry, whatever its status, read by the test process (on the stack)."""
    return next((ref for ref in clients.current().find(txid) if ref.kind == kind), None)


def in_status(kind: str, txid: str, status: Status, after_epoch: int = 0) -> TrackerRef | None:
    """A condition for ``wait_for``: the entry is in ``status`` at an epoch past ``after_epoch``
    (running: and has checkpointed)."""
    ref = entry(kind, txid)
    if ref is None or ref.status is not status or ref.epoch <= after_epoch:
        return None
    if status is Status.RUNNING and clients.current().get_state(kind, txid) is None:
        return None
    return ref


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


@pytest.fixture
def started(django_server: str, cluster: Cluster) -> Iterator[Callable[[str], TrackerRef]]:
    """``start(label)``: a transaction tracker started through the project's view, once it runs
    (``start("dead")``: a ``TemporaryCrasher``, once dead); stopped at the end if still there."""
    made: list[tuple[str, str]] = []

    def start(label: str) -> TrackerRef:
        txid = f"txn_admin_{label}_{uuid.uuid4().hex[:8]}"
        if label == "dead":
            made.append((TemporaryCrasher.kind, txid))
            TemporaryCrasher.start(txid)
            return wait_for(lambda: in_status(TemporaryCrasher.kind, txid, Status.DEAD), what="it to die")
        made.append((KIND, txid))
        track(django_server, txid)
        return wait_for(lambda: in_status(KIND, txid, Status.RUNNING), what=f"{txid} to run")

    yield start
    for kind, txid in made:
        if entry(kind, txid) is not None:
            clients.current().stop(kind, txid, "normal", 30.0)


@pytest.fixture(scope="module")
def superuser(django_user: Callable[..., User]) -> User:
    return django_user("admin", superuser=True)


@pytest.fixture(scope="module")
def viewer(django_user: Callable[..., User]) -> User:
    """A staff user who may view trackers, and do nothing to them."""
    return django_user("viewer", permissions=(VIEW,))


@pytest.fixture(scope="module")
def stopper(django_user: Callable[..., User]) -> User:
    """A staff user who may view and stop trackers, and neither restart nor start them afresh."""
    return django_user("stopper", permissions=(VIEW, "tracking.stop_tracker"))


# -- the page ----------------------------------------------------------------------------------------


def changelist(browser: WebDriver, base_url: str, search: str = "") -> None:
    browser.get(f"{base_url}{CHANGELIST}" + (f"?q={search}" if search else ""))
    visible(browser, "#changelist")


def listed(browser: WebDriver) -> list[str]:
    """The transaction IDs of the changelist's rows."""
    return [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#result_list tbody th")]


def offered_actions(browser: WebDriver) -> list[str]:
    """The actions the changelist's dropdown offers (none when it shows none)."""
    found = browser.find_elements(By.CSS_SELECTOR, "#changelist-form select[name=action]")
    if not found:
        return []
    values = [option.get_attribute("value") or "" for option in Select(found[0]).options]
    return [value for value in values if value]


def run_action(browser: WebDriver, base_url: str, txid: str, action: str, forge: bool = False) -> list[str]:
    """Tick the tracker's row on the changelist, run ``action`` from the action dropdown, and
    return the messages of the page that follows (the admin capitalises their first letter).
    ``forge``: add the action to the dropdown first, as a forged request would send it."""
    changelist(browser, base_url)
    row = f"//table[@id='result_list']//tr[th/a[normalize-space()='{txid}']]"
    browser.find_element(By.XPATH, f"{row}//input[contains(@class, 'action-select')]").click()
    select = browser.find_element(By.CSS_SELECTOR, "#changelist-form select[name=action]")
    if forge:
        browser.execute_script(
            "const option = document.createElement('option');"
            "option.value = option.text = arguments[1]; arguments[0].add(option);",
            select,
            action,
        )
    Select(select).select_by_value(action)
    submitted(browser, browser.find_element(By.CSS_SELECTOR, "#changelist-form button[name=index]"))
    return [item.text for item in browser.find_elements(By.CSS_SELECTOR, "ul.messagelist li")]


def collapse_the_sidebar(browser: WebDriver) -> None:
    """The admin's navigation sidebar closed (it remembers in the browser's storage): the
    screenshots show the page, not the app list."""
    browser.execute_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")


# -- the tests ---------------------------------------------------------------------------------------


def test_the_superuser_stops_a_running_tracker_with_the_stop_action(
    browser: WebDriver, django_server: str, superuser: User, started: Callable[[str], TrackerRef]
) -> None:
    txid = started("stop").transaction_id
    admin_login(browser, django_server, *superuser)

    said = run_action(browser, django_server, txid, "stop_trackers")

    # "stopped" once it has exited; "stop requested" if that took longer than the page waits
    assert len(said) == 1 and said[0].startswith(f"Transaction {txid}: stop"), said
    wait_for(lambda: entry(KIND, txid) is None, what="the entry to leave the registry")
    changelist(browser, django_server)
    assert txid not in listed(browser)


def test_the_superuser_restarts_a_running_tracker_now_under_a_new_epoch(
    browser: WebDriver,
    screenshot: Callable[[str], Path],
    django_server: str,
    superuser: User,
    started: Callable[[str], TrackerRef],
) -> None:
    first = started("restart")
    others = [started("other").transaction_id, started("dead").transaction_id]
    txid = first.transaction_id
    admin_login(browser, django_server, *superuser)
    collapse_the_sidebar(browser)
    changelist(browser, django_server)
    assert offered_actions(browser) == [
        "stop_trackers",
        "restart_trackers",
        "start_trackers_afresh",
    ]

    said = run_action(browser, django_server, txid, "restart_trackers")

    # "restart requested" while the old incarnation exits, "restarted" once the new one is recorded
    assert len(said) == 1 and said[0].startswith(f"Transaction {txid}: restart"), said
    assert {txid, *others} <= set(listed(browser))  # back on the list, which says what was done
    screenshot("django-admin-trackers")
    again = wait_for(lambda: in_status(KIND, txid, Status.RUNNING, first.epoch), what="the restart")
    assert again.task_id != first.task_id


def test_the_superuser_starts_a_dead_tracker_afresh(
    browser: WebDriver, django_server: str, superuser: User, started: Callable[[str], TrackerRef]
) -> None:
    dead = started("dead")
    txid = dead.transaction_id
    admin_login(browser, django_server, *superuser)

    refused = run_action(browser, django_server, txid, "restart_trackers")
    assert any("is dead: start it afresh instead" in text for text in refused), refused
    said = run_action(browser, django_server, txid, "start_trackers_afresh")

    assert said[0].startswith(f"{TemporaryCrasher.kind} {txid}: started afresh"), said
    # A new life under a new epoch: it crashes at its first tick again, and is dead again.
    wait_for(lambda: in_status(TemporaryCrasher.kind, txid, Status.DEAD, after_epoch=dead.epoch))


def test_a_tracker_s_change_page_shows_explain_its_history_and_a_link_to_flower(
    browser: WebDriver,
    screenshot: Callable[[str], Path],
    django_server: str,
    superuser: User,
    started: Callable[[str], TrackerRef],
) -> None:
    first = started("history")
    txid = first.transaction_id
    clients.current().stop(KIND, txid, "crash", 30.0)
    again = wait_for(lambda: in_status(KIND, txid, Status.RUNNING, first.epoch), what="the restart")
    admin_login(browser, django_server, *superuser)
    collapse_the_sidebar(browser)

    changelist(browser, django_server, search=txid)
    flower = browser.find_element(By.CSS_SELECTOR, "#result_list a.tracking-flower")
    assert flower.get_attribute("href") == f"{FLOWER_URL}/task/{again.task_id}"
    submitted(browser, browser.find_element(By.LINK_TEXT, txid))

    assert "running on w1@" in browser.find_element(By.CSS_SELECTOR, ".field-explanation pre").text
    events = [
        [cell.text for cell in row.find_elements(By.TAG_NAME, "td")][1:3]
        for row in browser.find_elements(By.CSS_SELECTOR, "table.tracking-history tbody tr")
    ]
    assert [str(first.epoch), "stopped"] in events and [str(again.epoch), "running"] in events, events
    assert not browser.find_elements(By.CSS_SELECTOR, "input[type=submit][name=_save]")  # read-only
    browser.execute_script("document.querySelector('.field-history').scrollIntoView()")
    screenshot("django-admin-tracker")


def test_the_workers_page_shows_the_worker_and_the_supervisor_s_sweeps(
    browser: WebDriver,
    screenshot: Callable[[str], Path],
    django_server: str,
    viewer: User,
    started: Callable[[str], TrackerRef],
) -> None:
    started("workers")
    admin_login(browser, django_server, *viewer)
    collapse_the_sidebar(browser)
    changelist(browser, django_server)
    submitted(browser, browser.find_element(By.ID, "tracking-workers-link"))

    visible(browser, "table#tracking-workers")
    hostnames = [
        row.find_element(By.TAG_NAME, "td").text
        for row in browser.find_elements(By.CSS_SELECTOR, "table#tracking-workers tr[data-worker-id]")
    ]
    assert any(name.startswith("w1@") for name in hostnames), hostnames

    def swept(driver: WebDriver) -> bool:
        driver.refresh()
        return bool(driver.find_elements(By.CSS_SELECTOR, "table#tracking-sweeps tr[data-supervisor]"))

    wait_until(browser).until(swept)
    screenshot("django-admin-workers")


def test_a_staff_user_without_the_permissions_is_offered_no_action_and_a_forged_one_is_refused(
    browser: WebDriver,
    django_server: str,
    viewer: User,
    stopper: User,
    started: Callable[[str], TrackerRef],
) -> None:
    first = started("refused")
    txid = first.transaction_id

    admin_login(browser, django_server, *viewer)
    changelist(browser, django_server, search=txid)
    assert listed(browser) == [txid]  # may look
    assert offered_actions(browser) == []
    assert not browser.find_elements(By.CSS_SELECTOR, "#result_list input.action-select")

    browser.delete_all_cookies()
    admin_login(browser, django_server, *stopper)
    changelist(browser, django_server)
    assert offered_actions(browser) == ["stop_trackers"]
    said = run_action(browser, django_server, txid, "restart_trackers", forge=True)
    assert "No action selected." in said, said

    # Nothing changed: the same incarnation runs on.
    assert observe(lambda: in_status(KIND, txid, Status.RUNNING) is None or None, seconds=1.0) is None
    now = entry(KIND, txid)
    assert now is not None and (now.epoch, now.task_id) == (first.epoch, first.task_id)


def test_the_admin_needs_a_login(browser: WebDriver, django_server: str) -> None:
    browser.get(f"{django_server}{CHANGELIST}")
    wait_until(browser).until(expected_conditions.url_contains("/admin/login/"))
    assert browser.find_element(By.ID, "login-form").is_displayed()
