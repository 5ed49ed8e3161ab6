"""The tracker admin an operator acts from: its actions and their permissions, a tracker's history,
the workers page, the links to Flower, and the app's system checks.

Driven with Django's test client as a logged-in staff user, through the example project (set up on
the module's stack by tests/contrib/django_project.py) against a real worker and beat on
PostgreSQL + Redis. The workers run the example's tracker and a temporary one of these tests
(tests/contrib/admin_trackers.py).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery

import tracking
from tests.contrib.admin_trackers import SlowTicker, TemporaryTicker
from tests.contrib.django_project import (  # noqa: F401 (the module's fixtures)
    EXAMPLE,
    django_db_blocker,
    django_db_setup,
    django_project,
    django_test_environment,
    project_is_current,
)
from tests.harness import TIMINGS, Cluster, free_port, running, wait_for
from tracking import registry
from tracking.celery import recommended_config
from tracking.settings import Settings

FOREVER = 1_000_000  # confirmations no test waits for
CHANGELIST = "/admin/tracking/tracker/"
WORKERS = "/admin/tracking/tracker/workers/"
ACTIONS = ("stop_trackers", "restart_trackers", "start_trackers_afresh")

pytestmark = [
    pytest.mark.stacks(
        "postgres-redis",
        imports="transactions.trackers,tests.contrib.admin_trackers",
        pythonpath=(str(EXAMPLE),),
    ),
    pytest.mark.cluster(workers=("w1",), beat=True),
]


def transaction_tracker() -> type[tracking.Tracker]:
    """The example project's tracker (importable once the project's folder is on the path)."""
    tracker: type[tracking.Tracker] = importlib.import_module("transactions.trackers").TransactionTracker
    return tracker


def entry(kind: str, txid: str) -> tracking.TrackerRef | None:
    """The registry entry of ``kind`` for ``txid``, dead ones included."""
    from django.apps import apps

    found = [ref for ref in apps.get_app_config("tracking").client.find(txid) if ref.kind == kind]
    return found[0] if found else None


def dead(kind: str, txid: str) -> tracking.TrackerRef | None:
    """The entry if it is dead, else None: a condition for ``wait_for``."""
    ref = entry(kind, txid)
    return ref if ref is not None and ref.status == "dead" else None


def incarnation(ref: tracking.TrackerRef | None) -> tuple[int, str] | None:
    return (ref.epoch, ref.task_id) if ref is not None else None


def pk(kind: str, txid: str) -> int:
    from tracking.contrib.django.models import Tracker

    key: int = Tracker.objects.get(kind=kind, transaction_id=txid).pk
    return key


def act(client: Any, action: str, *keys: int) -> list[str]:
    """Run ``action`` on the trackers of primary keys ``keys`` from the list, as its form does;
    returns the messages of the page it leads to."""
    form = {"action": action, "index": 0, "_selected_action": list(keys)}
    response = client.post(CHANGELIST, form, follow=True)
    assert response.status_code == 200
    return [str(message) for message in response.context["messages"]]


def offered(client: Any) -> set[str]:
    """The actions the list offers the logged-in user."""
    page = client.get(CHANGELIST)
    assert page.status_code == 200
    return {action for action in ACTIONS if f'value="{action}"' in page.text}


@pytest.fixture
def operator(client: Any, transactional_db: None, django_user_model: Any) -> Callable[..., Any]:
    """Log in a staff user who may view trackers and has the permissions named (codenames).

    The test runs outside any transaction of the project's database (``transactional_db``, not
    ``db``), as a request does: a start inside the test's atomic block would wait for its commit."""
    from django.contrib.auth.models import Permission

    def log_in(*codenames: str, view: bool = True) -> Any:
        user = django_user_model.objects.create_user(f"operator-{len(codenames)}-{view}", is_staff=True)
        wanted = [*codenames, *(["view_tracker"] if view else [])]
        permissions = Permission.objects.filter(content_type__app_label="tracking", codename__in=wanted)
        user.user_permissions.add(*permissions)
        client.force_login(user)
        return user

    return log_in


@pytest.fixture
def stopped_afterwards() -> Iterator[list[tuple[type[tracking.Tracker], str]]]:
    """Trackers a test started, stopped at its end whatever happened."""
    started: list[tuple[type[tracking.Tracker], str]] = []
    yield started
    for tracker, txid in started:
        try:
            tracker.stop(txid)
        except tracking.NotFound:
            pass



def running_forever(
    txid: str, stopped_afterwards: list[tuple[type[tracking.Tracker], str]]
) -> tuple[type[tracking.Tracker], tracking.TrackerRef]:
    """The example's tracker started for ``txid`` with confirmations it never reaches, once it
    runs (stopped after the test)."""
    TransactionTracker = transaction_tracker()
    TransactionTracker.start(txid, confirmations=FOREVER)
    stopped_afterwards.append((TransactionTracker, txid))
    return TransactionTracker, wait_for(lambda: running(TransactionTracker, txid), what="the tracker to run")

def test_stop_stops_a_running_tracker_which_leaves_the_registry(
    client: Any, cluster: Cluster, operator: Callable[..., Any], txid: str
) -> None:
    TransactionTracker = transaction_tracker()
    TransactionTracker.start(txid, confirmations=FOREVER)
    wait_for(lambda: running(TransactionTracker, txid), what="the tracker to run")
    operator("stop_tracker")

    assert offered(client) == {"stop_trackers"}
    assert act(client, "stop_trackers", pk("transaction", txid)) == [f"transaction {txid}: stopped"]
    assert entry("transaction", txid) is None
    assert act(client, "stop_trackers") == [  # nothing selected
        "Items must be selected in order to perform actions on them. No items have been changed."
    ]


def test_stop_of_a_tracker_that_does_not_exit_in_time_says_stop_requested_and_takes_effect(
    client: Any,
    cluster: Cluster,
    operator: Callable[..., Any],
    txid: str,
    stopped_afterwards: list[tuple[type[tracking.Tracker], str]],
) -> None:
    SlowTicker.start(txid, tick_seconds=4)
    stopped_afterwards.append((SlowTicker, txid))
    # Its first tick is checkpointed: the second one has just begun, and lasts 4 s.
    wait_for(lambda: (SlowTicker.get_state(txid) or {}).get("ticks") == 1, what="the first tick")
    operator("stop_tracker")

    [message] = act(client, "stop_trackers", pk("slow_ticker", txid))
    assert message == (
        f"slow_ticker {txid}: stop requested: it has not exited within 2 s; the stop stays recorded "
        "and takes effect"
    )
    wait_for(lambda: entry("slow_ticker", txid) is None, what="the stop to take effect")


def test_restart_now_brings_a_running_tracker_back_under_a_new_epoch(
    client: Any,
    cluster: Cluster,
    operator: Callable[..., Any],
    txid: str,
    stopped_afterwards: list[tuple[type[tracking.Tracker], str]],
) -> None:
    TransactionTracker, before = running_forever(txid, stopped_afterwards)
    operator("restart_tracker")

    assert offered(client) == {"restart_trackers"}
    [message] = act(client, "restart_trackers", pk("transaction", txid))
    assert message.startswith(f"transaction {txid}: restart requested")
    after = wait_for(lambda: running(TransactionTracker, txid, after_epoch=before.epoch), what="the restart")
    assert after.restarts == before.restarts + 1 and after.task_id != before.task_id


def test_a_dead_tracker_is_refused_a_restart_and_runs_again_once_started_afresh(
    client: Any,
    cluster: Cluster,
    operator: Callable[..., Any],
    txid: str,
    stopped_afterwards: list[tuple[type[tracking.Tracker], str]],
) -> None:
    TemporaryTicker.start(txid)
    stopped_afterwards.append((TemporaryTicker, txid))
    wait_for(lambda: running(TemporaryTicker, txid), what="the tracker to run")
    operator("restart_tracker", "start_tracker")
    key = pk("temporary_ticker", txid)

    act(client, "restart_trackers", key)  # temporary: an abnormal exit leaves it dead
    gone = wait_for(lambda: dead("temporary_ticker", txid), what="the tracker to be dead")
    [refused] = act(client, "restart_trackers", key)
    assert "is dead: start it afresh" in refused and '"Start a dead tracker afresh"' in refused
    assert incarnation(dead("temporary_ticker", txid)) == incarnation(gone)

    [started] = act(client, "start_trackers_afresh", key)
    assert started.startswith(f"temporary_ticker {txid}: started afresh")
    again = wait_for(lambda: running(TemporaryTicker, txid, after_epoch=gone.epoch), what="a fresh start")
    assert again.restarts == 0
    [not_dead] = act(client, "start_trackers_afresh", key)
    assert "not dead" in not_dead
    assert incarnation(TemporaryTicker.lookup(txid)) == incarnation(again)  # nothing changed


def test_a_staff_user_without_the_permission_is_not_offered_the_action_and_changes_nothing(
    client: Any,
    cluster: Cluster,
    operator: Callable[..., Any],
    txid: str,
    stopped_afterwards: list[tuple[type[tracking.Tracker], str]],
) -> None:
    TransactionTracker, ref = running_forever(txid, stopped_afterwards)
    key = pk("transaction", txid)

    operator()  # may view trackers, nothing more
    assert offered(client) == set()
    for action in ACTIONS:
        response = client.post(CHANGELIST, {"action": action, "index": 0, "_selected_action": [key]})
        assert response.status_code == 200 and "messagelist" not in response.text

    operator("stop_tracker")
    assert act(client, "restart_trackers", key) == ["No action selected."]
    assert act(client, "start_trackers_afresh", key) == ["No action selected."]
    assert incarnation(TransactionTracker.lookup(txid)) == incarnation(ref)  # nothing changed

    operator(view=False)  # staff, without the right to view trackers
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(WORKERS).status_code == 403

    from django.contrib.auth.models import User

    client.force_login(User.objects.create_superuser("root", "root@example.com", "a-long-password"))
    assert offered(client) == set(ACTIONS)


def test_a_tracker_s_page_shows_its_recent_history(
    client: Any,
    cluster: Cluster,
    operator: Callable[..., Any],
    txid: str,
    stopped_afterwards: list[tuple[type[tracking.Tracker], str]],
) -> None:
    TransactionTracker, first = running_forever(txid, stopped_afterwards)
    TransactionTracker.stop(txid, reason="crash")
    wait_for(lambda: running(TransactionTracker, txid, after_epoch=first.epoch), what="the restart")
    operator()

    page = client.get(f"{CHANGELIST}{pk('transaction', txid)}/change/")
    assert page.status_code == 200 and "Recent history" in page.text
    history = page.text.split('<table class="tracking-history">', 1)[1].split("</table>", 1)[0]
    events = re.findall(r"<tr><td>[^<]*</td><td>(\d+)</td><td>([a-z_]+)</td>", history)
    assert events[-1] == (str(first.epoch), "started")  # newest first: the start is the oldest
    assert (str(first.epoch), "crashed") in events or (str(first.epoch), "stopped") in events
    assert any(event == "restarting" for _, event in events)


def test_the_workers_page_lists_the_live_worker_with_its_lease_age_and_the_supervisor_s_sweeps(
    client: Any, cluster: Cluster, operator: Callable[..., Any]
) -> None:
    operator()
    assert f'href="{WORKERS}" id="tracking-workers-link"' in client.get(CHANGELIST).text

    page = wait_for(lambda: (p := client.get(WORKERS)) and "data-supervisor=" in p.text and p, what="a sweep")
    assert page.status_code == 200
    row = r'<tr data-worker-id="[^"]+" class="tracking-worker-(\w+)">\s*<td>([^<]+)</td>'
    rows = re.findall(row, page.text)
    assert any(status == "alive" and host.startswith("w1@") for status, host in rows), rows
    ages = [float(age) for age in re.findall(r'<td class="lease-age">(-?[\d.]+) s</td>', page.text)]
    assert ages and min(ages) < TIMINGS["lease_seconds"]


def test_task_ids_link_to_flower_only_when_tracking_flower_url_is_set(
    client: Any,
    cluster: Cluster,
    operator: Callable[..., Any],
    txid: str,
    monkeypatch: pytest.MonkeyPatch,
    stopped_afterwards: list[tuple[type[tracking.Tracker], str]],
) -> None:
    from django.apps import apps

    TransactionTracker, ref = running_forever(txid, stopped_afterwards)
    operator()
    detail = f"{CHANGELIST}{pk('transaction', txid)}/change/"
    assert "tracking-flower" not in client.get(CHANGELIST).text + client.get(detail).text

    monkeypatch.setattr(apps.get_app_config("tracking"), "flower_url", "http://flower.example:5555")
    link = f'<a class="tracking-flower" href="http://flower.example:5555/task/{ref.task_id}">{ref.task_id}</a>'
    assert link in client.get(CHANGELIST).text and link in client.get(detail).text


# -- system checks ------------------------------------------------------------------------------


def tracking_checks(deploy: bool = False, databases: list[str] | None = None) -> list[tuple[str, str]]:
    """The tracking app's system check messages: (id, message)."""
    from django.core import checks

    found = checks.run_checks(tags=["tracking"], include_deployment_checks=deploy, databases=databases)
    return [(message.id, message.msg) for message in found]


def on_celery_app(monkeypatch: pytest.MonkeyPatch, settings: Settings, **conf: Any) -> Celery:
    """The tracking app pointed at a Celery app of its own with ``settings``: the recommended
    configuration, ``conf`` over it."""
    from django.apps import apps

    app = Celery("checked", set_as_current=False)
    app.conf.update({**recommended_config(settings), **conf})
    tracking.install(app, settings)
    monkeypatch.setattr(apps.get_app_config("tracking"), "celery", app)
    return app


def test_the_system_checks_pass_on_the_example_project_with_its_services_up(cluster: Cluster) -> None:
    assert tracking_checks(deploy=True, databases=["default"]) == []


def test_the_settings_check_reports_a_bad_tracking_setting_and_a_dangerous_celery_one(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.apps import apps

    settings.TRACKING_LEASE_SECONDS = "abc"
    settings.TRACKING_FLOWER_URL = "flower:5555"
    [(lease_id, lease), (flower_id, flower)] = tracking_checks()
    assert lease_id == flower_id == "tracking.E001"
    assert "TRACKING_LEASE_SECONDS must be a number" in lease and "TRACKING_FLOWER_URL" in flower

    del settings.TRACKING_LEASE_SECONDS, settings.TRACKING_FLOWER_URL
    monkeypatch.setitem(apps.get_app_config("tracking").celery.conf, "worker_prefetch_multiplier", 4)
    [(id_, msg)] = tracking_checks()
    assert id_ == "tracking.W001" and "worker_prefetch_multiplier is 4" in msg


def test_the_registry_check_reports_an_unreachable_database_and_one_not_migrated(
    monkeypatch: pytest.MonkeyPatch, pg_databases: Callable[[], str]
) -> None:
    from django.apps import apps

    project = apps.get_app_config("tracking").settings
    nowhere = project.with_overrides(database_url=f"postgresql+psycopg://127.0.0.1:{free_port()}/nowhere")
    fresh = project.with_overrides(database_url=pg_databases())
    try:
        on_celery_app(monkeypatch, nowhere)
        assert tracking_checks() == []  # only when databases are named
        [(id_, msg)] = tracking_checks(databases=["default"])
        assert id_ == "tracking.E002" and "registry database" in msg and "nowhere" in msg

        on_celery_app(monkeypatch, fresh)
        [(id_, msg)] = tracking_checks(databases=["default"])
        assert id_ == "tracking.W002" and "not migrated" in msg
    finally:
        registry.dispose(nowhere)
        registry.dispose(fresh)


def test_the_broker_check_reports_an_unreachable_broker_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.apps import apps

    project = apps.get_app_config("tracking").settings
    broker = f"redis://:not-shown@127.0.0.1:{free_port()}/0"
    on_celery_app(monkeypatch, project.with_overrides(broker_url=broker), broker_url=broker)
    assert tracking_checks() == []  # a deployment check
    [(id_, msg)] = tracking_checks(deploy=True)
    assert id_ == "tracking.E003" and f"127.0.0.1:{broker.rsplit(':', 1)[1]}" in msg
    assert "not-shown" not in msg
