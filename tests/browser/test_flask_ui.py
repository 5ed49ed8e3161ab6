"""The Flask trackers pages (tracking.contrib.flask, mounted at /tracking by the example app) in
headless Chromium, against a real worker on PostgreSQL + Redis.

The worker runs the example's tracker and the integration tests' (``Counter``, a second kind, and
``TemporaryCrasher``, which is dead after its first tick). The example app lets anyone act when
its ``UI_ACTIONS`` setting is on (this module's app has it on); a test turns it off to see the
buttons go and a POST refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from examples.flask_app.trackers import TransactionTracker
from tests.browser.support import submitted, visible
from tests.harness import Cluster, observe, running, wait_for
from tests.integration.trackers import Counter, TemporaryCrasher
from tracking import Status, Tracker, TrackerRef

FOREVER = 1_000_000  # confirmations no test waits for
PAGES = "/tracking"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.stacks("postgres-redis", imports="examples.flask_app.trackers,tests.integration.trackers"),
    pytest.mark.cluster(workers=("w1",), beat=True),
]


def new_id(label: str) -> str:
    return f"txn_{label}_{uuid.uuid4().hex[:8]}"


def entry(tracker: type[Tracker], txid: str) -> TrackerRef | None:
    """The registry's entry, whatever its status (``lookup`` hides dead ones)."""
    return next((ref for ref in tracker.list() if ref.transaction_id == txid), None)


@pytest.fixture
def trackers(cluster: Cluster) -> Iterator[Callable[[type[Tracker], str], TrackerRef]]:
    """``start(tracker, label)``: a tracker started and running (``TemporaryCrasher``: dead), under
    a new transaction ID; those still registered are stopped at the end."""
    started: list[tuple[type[Tracker], str]] = []

    def start(tracker: type[Tracker], label: str) -> TrackerRef:
        txid = new_id(label)
        started.append((tracker, txid))
        if tracker is TransactionTracker:
            tracker.start(txid, confirmations=FOREVER)
        else:
            tracker.start(txid)
        status = Status.DEAD if tracker is TemporaryCrasher else Status.RUNNING
        return wait_for(lambda: _in(tracker, txid, status), what=f"{txid} to be {status.value}")

    yield start
    for tracker, txid in started:
        if entry(tracker, txid) is not None:
            tracker.stop(txid)


def _in(tracker: type[Tracker], txid: str, status: Status) -> TrackerRef | None:
    ref = entry(tracker, txid)
    return ref if ref is not None and ref.status is status else None


# -- the page ----------------------------------------------------------------------------------------


def rows(browser: WebDriver) -> dict[str, dict[str, str]]:
    """The list's rows by transaction ID: kind, status and epoch from their data attributes."""
    return {
        row.get_attribute("data-transaction-id") or "": {
            "kind": row.get_attribute("data-kind") or "",
            "status": row.get_attribute("data-status") or "",
            "epoch": row.get_attribute("data-epoch") or "",
        }
        for row in browser.find_elements(By.CSS_SELECTOR, "table#trackers tr.tracker")
    }


def filter_list(browser: WebDriver, kind: str = "", status: str = "", transaction_id: str = "") -> None:
    """Fill the list's filters and submit them."""
    Select(browser.find_element(By.ID, "kind")).select_by_value(kind)
    Select(browser.find_element(By.ID, "status")).select_by_value(status)
    field = browser.find_element(By.ID, "transaction_id")
    field.clear()
    field.send_keys(transaction_id)
    submitted(browser, browser.find_element(By.ID, "filter"))


def field(browser: WebDriver, name: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, f"table#fields tr[data-field={name}] td").text


def open_tracker(browser: WebDriver, base: str, tracker: type[Tracker], txid: str) -> None:
    """The tracker's page, reached from the list by searching its ID and following its link."""
    browser.get(f"{base}{PAGES}/")
    filter_list(browser, transaction_id=txid)
    submitted(browser, browser.find_element(By.CSS_SELECTOR, "tr.tracker a.detail"))
    assert browser.find_element(By.ID, "transaction-id").text == txid
    assert field(browser, "kind") == tracker.kind


def offered(browser: WebDriver) -> set[str]:
    """The action buttons on a tracker's page, by ID."""
    buttons = browser.find_elements(By.CSS_SELECTOR, "#actions button")
    return {button.get_attribute("id") or "" for button in buttons}


def messages(browser: WebDriver) -> list[tuple[str, str]]:
    """The page's flashed messages: (category, text)."""
    found = browser.find_elements(By.CSS_SELECTOR, "#messages li.message")
    return [((item.get_attribute("class") or "").replace("message", "").strip(), item.text) for item in found]


# -- the tests ---------------------------------------------------------------------------------------


def test_the_list_shows_the_started_trackers_and_its_filters_and_search_narrow_it(
    browser: WebDriver,
    screenshot: Callable[[str], Path],
    flask_server: str,
    trackers: Callable[[type[Tracker], str], TrackerRef],
) -> None:
    first = trackers(TransactionTracker, "list_a")
    second = trackers(TransactionTracker, "list_b")
    counter = trackers(Counter, "list_counter")
    dead = trackers(TemporaryCrasher, "list_dead")
    ours = {ref.transaction_id for ref in (first, second, counter, dead)}

    browser.get(f"{flask_server}{PAGES}/")
    visible(browser, "table#trackers")
    listed = rows(browser)
    assert ours <= set(listed)
    assert listed[first.transaction_id] == {
        "kind": "transaction",
        "status": "running",
        "epoch": str(first.epoch),
    }
    assert listed[dead.transaction_id]["status"] == "dead"
    screenshot("flask-trackers")

    filter_list(browser, status="dead")
    assert dead.transaction_id in rows(browser)
    assert {row["status"] for row in rows(browser).values()} == {"dead"}

    filter_list(browser, kind="Counter")
    assert counter.transaction_id in rows(browser)
    assert {row["kind"] for row in rows(browser).values()} == {"Counter"}

    filter_list(browser, kind="transaction", status="running")
    narrowed = rows(browser)
    assert {first.transaction_id, second.transaction_id} <= set(narrowed)
    assert counter.transaction_id not in narrowed and dead.transaction_id not in narrowed

    filter_list(browser, transaction_id=second.transaction_id)
    assert list(rows(browser)) == [second.transaction_id]
    assert browser.find_element(By.ID, "count").get_attribute("data-count") == "1"

    filter_list(browser, transaction_id="txn_nobody_started_this")
    assert rows(browser) == {} and browser.find_element(By.ID, "empty").is_displayed()

    submitted(browser, browser.find_element(By.ID, "clear"))
    assert ours <= set(rows(browser))


def test_a_tracker_s_page_shows_its_fields_explain_and_history_after_a_crash(
    browser: WebDriver,
    screenshot: Callable[[str], Path],
    flask_server: str,
    trackers: Callable[[type[Tracker], str], TrackerRef],
) -> None:
    first = trackers(TransactionTracker, "detail")
    txid = first.transaction_id
    TransactionTracker.stop(txid, reason="crash")
    again = wait_for(lambda: running(TransactionTracker, txid, after_epoch=first.epoch), what="the restart")

    open_tracker(browser, flask_server, TransactionTracker, txid)
    assert field(browser, "status") == "running"
    assert field(browser, "epoch") == str(again.epoch)
    assert field(browser, "restarts") == "1"
    assert field(browser, "worker").startswith("w1@")
    assert '"required": 1000000' in browser.find_element(By.ID, "state").text
    assert "running" in browser.find_element(By.ID, "explain").text
    events = [
        (row.get_attribute("data-event"), row.get_attribute("data-epoch"))
        for row in browser.find_elements(By.CSS_SELECTOR, "table#history tr.event")
    ]
    assert ("stopped", str(first.epoch)) in events and ("running", str(again.epoch)) in events, events
    assert {"stop", "restart"} <= offered(browser)
    screenshot("flask-tracker")


def test_stop_on_a_tracker_s_page_removes_the_running_tracker(
    browser: WebDriver, flask_server: str, trackers: Callable[[type[Tracker], str], TrackerRef]
) -> None:
    txid = trackers(TransactionTracker, "stop").transaction_id

    open_tracker(browser, flask_server, TransactionTracker, txid)
    submitted(browser, browser.find_element(By.ID, "stop"))

    # "Stopped" once it has exited; "Stop requested" if that took longer than the page waits
    said = messages(browser)
    assert len(said) == 1 and said[0][1].startswith(("Stopped transaction", "Stop requested")), said
    assert txid in said[0][1]
    wait_for(lambda: entry(TransactionTracker, txid) is None, what="the entry to leave the registry")
    browser.get(f"{flask_server}{PAGES}/")
    assert txid not in rows(browser)


def test_restart_now_on_a_tracker_s_page_gives_it_a_new_epoch(
    browser: WebDriver, flask_server: str, trackers: Callable[[type[Tracker], str], TrackerRef]
) -> None:
    first = trackers(TransactionTracker, "restart")
    txid = first.transaction_id

    open_tracker(browser, flask_server, TransactionTracker, txid)
    submitted(browser, browser.find_element(By.ID, "restart"))

    assert ("success", f"Restarted transaction {txid!r}.") in messages(browser)
    again = wait_for(
        lambda: running(TransactionTracker, txid, after_epoch=first.epoch), what="the new incarnation to run"
    )
    assert again.task_id != first.task_id
    browser.refresh()
    assert int(field(browser, "epoch")) >= again.epoch > first.epoch


def test_start_afresh_on_a_dead_tracker_s_page_starts_a_new_life(
    browser: WebDriver, flask_server: str, trackers: Callable[[type[Tracker], str], TrackerRef]
) -> None:
    dead = trackers(TemporaryCrasher, "afresh")
    txid = dead.transaction_id

    open_tracker(browser, flask_server, TemporaryCrasher, txid)
    assert field(browser, "status") == "dead"
    assert "start-afresh" in offered(browser) and "restart" not in offered(browser)
    submitted(browser, browser.find_element(By.ID, "start-afresh"))

    assert ("success", f"Started TemporaryCrasher {txid!r} afresh.") in messages(browser)
    # A new life under a new epoch; it crashes at its first tick again, and is dead again.
    wait_for(lambda: _dead_after(txid, dead.epoch), what="the new life to run and die")


def _dead_after(txid: str, epoch: int) -> TrackerRef | None:
    ref = entry(TemporaryCrasher, txid)
    return ref if ref is not None and ref.status is Status.DEAD and ref.epoch > epoch else None


def test_without_the_permission_the_buttons_are_gone_and_a_post_is_refused_changing_nothing(
    browser: WebDriver,
    flask_app: Flask,
    flask_server: str,
    trackers: Callable[[type[Tracker], str], TrackerRef],
) -> None:
    first = trackers(TransactionTracker, "refused")
    txid = first.transaction_id

    open_tracker(browser, flask_server, TransactionTracker, txid)  # allowed: the buttons are there
    stop = browser.find_element(By.ID, "stop")
    flask_app.config["UI_ACTIONS"] = False  # the permission is withdrawn while the page is open
    try:
        submitted(browser, stop)
        error = browser.find_element(By.ID, "error")
        assert error.get_attribute("data-status") == "403"
        refusal = browser.find_element(By.ID, "error-message").text
        assert f"not allowed to stop transaction {txid!r}" in refusal

        open_tracker(browser, flask_server, TransactionTracker, txid)
        assert offered(browser) == set()
        assert browser.find_element(By.ID, "no-actions").is_displayed()
    finally:
        flask_app.config["UI_ACTIONS"] = True

    # Nothing changed: the same incarnation runs on, and no stop is ever recorded.
    assert observe(lambda: running(TransactionTracker, txid) is None or None, seconds=1.0) is None
    now = running(TransactionTracker, txid)
    assert now is not None and (now.epoch, now.task_id) == (first.epoch, first.task_id)
