"""The trackers pages and their JSON API (tracking.contrib.flask.blueprint), driven through the
example app's test client against a real worker on PostgreSQL + Redis: what the pages show is
the registry, and what their buttons do happens there."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

import tracking
from examples.flask_app.app import create_app
from examples.flask_app.trackers import TransactionTracker
from tests.harness import Cluster, Stack, observe, running, wait_for
from tracking import Status, registry
from tracking.contrib.flask import Permission, Tracking, blueprint
from tracking.explain import explanation

FOREVER = 1_000_000  # confirmations no test waits for
KIND = TransactionTracker.kind
SAME_ORIGIN = {"Origin": "http://localhost"}  # the test client's own origin

pytestmark = [
    pytest.mark.stacks("postgres-redis", imports="examples.flask_app.trackers"),
    pytest.mark.cluster(workers=("w1",), beat=True),
]


@pytest.fixture(scope="module")
def app(stack: Stack) -> Flask:
    """The example app, configured from the environment as in production, actions allowed."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in stack.web_env().items():
            mp.setenv(key, value)
        return create_app(
            {
                "TESTING": True,
                "UI_ACTIONS": True,
                "SECRET_KEY": "a test's",
                "CELERY": {"broker_transport_options": stack.transport_options()},
            }
        )


@pytest.fixture
def client(app: Flask, cluster: Cluster) -> Iterator[FlaskClient]:
    with app.app_context():
        app.extensions["tracking"].make_current()
    with app.test_client() as client:
        yield client


@pytest.fixture
def bare_app(stack: Stack) -> Callable[..., Flask]:
    """A Flask app of the test's own on the stack's registry, with the pages mounted at /ops by
    ``blueprint(**options)`` (``secret_key`` and ``database_url`` are the app's)."""

    def make(secret_key: str | None = "bare", database_url: str | None = None, **options: Any) -> Flask:
        app = Flask("bare")
        app.config.update(
            TESTING=True,
            SECRET_KEY=secret_key,
            CELERY={"broker_transport_options": stack.transport_options()},
        )
        with pytest.MonkeyPatch.context() as mp:
            for key, value in stack.web_env().items():
                mp.setenv(key, value)
            if database_url is not None:
                mp.setenv("TRACKING_DATABASE_URL", database_url)
            Tracking(app)
        app.register_blueprint(blueprint(**options), url_prefix="/ops")
        return app

    return make


# -- reading the pages (their selectors are listed in tracking/contrib/flask/views.py) ----------------


def rows(page: str) -> list[dict[str, str]]:
    """The data-* attributes of each ``tr.tracker`` of a list page."""
    found = re.findall(r'<tr class="tracker" ([^>]*)>', page)
    attributes = [re.findall(r'data-([\w-]+)="([^"]*)"', attrs) for attrs in found]
    return [{k: html.unescape(v) for k, v in pairs} for pairs in attributes]


def text_of(page: str, element_id: str) -> str | None:
    """The text inside the element with this id, tags stripped."""
    match = re.search(rf'<(\w+)[^>]*\bid="{element_id}"[^>]*>(.*?)</\1>', page, flags=re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(2))).strip() if match else None


def field(page: str, name: str) -> str | None:
    match = re.search(rf'<tr data-field="{name}"><th>[^<]*</th><td[^>]*>(.*?)</td>', page, flags=re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip() if match else None


def messages(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'<li class="message \w+">([^<]*)</li>', page)]


def buttons(page: str) -> list[str]:
    return re.findall(r'<button type="submit" name="([\w-]+)"', page)


def events(page: str) -> list[str]:
    return re.findall(r'<tr class="event" data-event="([^"]+)"', page)


def detail_url(txid: str, kind: str = KIND) -> tuple[str, dict[str, str]]:
    return "/tracking/tracker", {"kind": kind, "transaction_id": txid}


def press(client: FlaskClient, action: str, txid: str, **headers: str) -> TestResponse:
    """Press an action's button on the tracker's page (a same-origin form POST), and follow
    where it leads."""
    return client.post(
        f"/tracking/tracker/{action}",
        data={"kind": KIND, "transaction_id": txid, action: "1"},
        headers=headers or SAME_ORIGIN,
        follow_redirects=True,
    )


def api(client: FlaskClient, action: str, txid: str, prefix: str = "/tracking") -> TestResponse:
    return client.post(f"{prefix}/api/tracker/{action}", json={"kind": KIND, "transaction_id": txid})


def ticking(txid: str, after_epoch: int = 0) -> tracking.TrackerRef:
    """The tracker once a worker runs it (at an epoch past ``after_epoch``) and has ticked."""

    def ticked() -> tracking.TrackerRef | None:
        ref = running(TransactionTracker, txid, after_epoch=after_epoch)
        state = TransactionTracker.get_state(txid) if ref is not None else None
        return ref if state is not None and state["confirmations"] >= 1 else None

    return wait_for(ticked, what=f"{txid} to tick")


def started(txid: str) -> tracking.TrackerRef:
    TransactionTracker.start(txid, confirmations=FOREVER)
    return ticking(txid)


def entries(txid: str) -> list[tracking.TrackerRef]:
    return tracking.client.current().find(txid)


# -- the list --------------------------------------------------------------------------------------


def test_the_list_shows_running_trackers_and_filters_them_by_kind_status_and_exact_id(
    client: FlaskClient, txid: str
) -> None:
    first, second = started(f"{txid}-a"), started(f"{txid}-b")

    page = client.get("/tracking/", query_string={"status": "running"})
    assert page.status_code == 200
    shown = rows(page.text)
    assert {first.transaction_id, second.transaction_id} <= {r["transaction-id"] for r in shown}
    assert {r["status"] for r in shown} == {"running"}
    mine = next(r for r in shown if r["transaction-id"] == first.transaction_id)
    assert mine == {"kind": KIND, "transaction-id": first.transaction_id, "status": "running", "epoch": "1"}
    count = text_of(page.text, "count")
    assert count is not None and int(count.split()[0]) == tracking.client.current().count(status="running")

    found = client.get("/tracking/", query_string={"transaction_id": f"{txid}-a"})
    assert [r["transaction-id"] for r in rows(found.text)] == [f"{txid}-a"]
    assert 'data-count="1"' in found.text
    exact = client.get("/tracking/", query_string={"transaction_id": txid})  # a prefix finds nothing
    assert rows(exact.text) == [] and 'id="empty"' in exact.text
    other_kind = client.get("/tracking/", query_string={"kind": "no-such-kind", "status": "running"})
    assert rows(other_kind.text) == [] and 'data-count="0"' in other_kind.text
    dead = client.get("/tracking/", query_string={"status": "dead", "transaction_id": f"{txid}-a"})
    assert rows(dead.text) == []

    for tracker in (first, second):
        TransactionTracker.stop(tracker.transaction_id)


def test_the_list_pages_through_the_trackers_oldest_first(client: FlaskClient, txid: str) -> None:
    for n in range(3):
        TransactionTracker.start(f"{txid}-{n}", confirmations=FOREVER)
    total = tracking.client.current().count(kind=KIND)
    assert total >= 3

    seen: list[str] = []
    page = 1
    while True:
        response = client.get("/tracking/", query_string={"kind": KIND, "per_page": 2, "page": page})
        assert response.status_code == 200
        shown = rows(response.text)
        assert 1 <= len(shown) <= 2
        seen += [r["transaction-id"] for r in shown]
        if 'id="next"' not in response.text:
            break
        page += 1
    assert len(seen) == total == len(set(seen))
    assert [s for s in seen if s.startswith(txid)] == [f"{txid}-0", f"{txid}-1", f"{txid}-2"]
    assert f'data-page="{page}" data-pages="{page}"' in response.text
    assert ('id="previous"' in response.text) is (page > 1)

    for n in range(3):
        TransactionTracker.stop(f"{txid}-{n}")


# -- one tracker -----------------------------------------------------------------------------------


def test_a_tracker_s_page_shows_its_fields_state_explanation_history_and_the_buttons_that_apply(
    client: FlaskClient, txid: str
) -> None:
    ref = started(txid)

    path, query = detail_url(txid)
    page = client.get(path, query_string=query)

    assert page.status_code == 200
    assert text_of(page.text, "transaction-id") == txid
    assert field(page.text, "status") == "running" and field(page.text, "epoch") == str(ref.epoch)
    assert field(page.text, "task_id") == ref.task_id
    worker = field(page.text, "worker")
    assert worker is not None and worker.startswith("w1@")
    assert '"required": 1000000' in (text_of(page.text, "state") or "")
    explained = text_of(page.text, "explain") or ""
    assert f"{KIND} {txid!r}: running (epoch {ref.epoch}" in explained and "running on w1@" in explained
    assert events(page.text)[0] == "started"
    assert buttons(page.text) == ["stop", "restart"]  # start afresh is for dead ones only

    TransactionTracker.stop(txid)


def test_a_tracker_that_never_was_is_a_404_page(client: FlaskClient, txid: str) -> None:
    path, query = detail_url(txid)
    page = client.get(path, query_string=query)
    assert page.status_code == 404
    assert 'id="not-registered"' in page.text and buttons(page.text) == []


# -- the buttons -----------------------------------------------------------------------------------


def test_stop_stops_the_tracker_and_it_leaves_the_registry(client: FlaskClient, txid: str) -> None:
    started(txid)

    page = press(client, "stop", txid)

    assert page.status_code == 200 and page.request.path == "/tracking/"
    assert messages(page.text) == [f"Stopped {KIND} {txid!r}: it has left the registry."]
    assert TransactionTracker.lookup(txid) is None and entries(txid) == []
    path, query = detail_url(txid)
    gone = client.get(path, query_string=query)
    assert gone.status_code == 404 and events(gone.text)[-1] == "stopped"


def test_restart_now_brings_the_tracker_back_under_a_greater_epoch_with_its_state(
    client: FlaskClient, txid: str
) -> None:
    before = started(txid)
    confirmations = TransactionTracker.get_state(txid)["confirmations"]  # type: ignore[index]

    page = press(client, "restart", txid)

    assert page.status_code == 200 and page.request.path == "/tracking/tracker"
    assert messages(page.text) == [f"Restarted {KIND} {txid!r}."]
    after = ticking(txid, after_epoch=before.epoch)
    assert after.epoch > before.epoch and after.restarts == before.restarts + 1
    assert TransactionTracker.get_state(txid)["confirmations"] >= confirmations  # type: ignore[index]

    TransactionTracker.stop(txid)


def restarted_to_death(client: FlaskClient, txid: str) -> tracking.TrackerRef:
    """Restart now, again and again, until the tracker is past its restart intensity (5 in 60 s):
    then the API refuses to restart it (409), and it is dead."""
    wait_for(lambda: api(client, "restart", txid).status_code == 409, interval=0.1, what="death")
    (ref,) = entries(txid)
    assert ref.status is Status.DEAD
    return ref


def test_a_dead_tracker_is_started_afresh_and_runs_again_from_its_init(
    client: FlaskClient, txid: str
) -> None:
    started(txid)
    dead = restarted_to_death(client, txid)
    path, query = detail_url(txid)
    page = client.get(path, query_string=query)
    assert field(page.text, "status") == "dead" and buttons(page.text) == ["stop", "start-afresh"]
    assert "dead" in (text_of(page.text, "explain") or "")

    page = press(client, "start-afresh", txid)

    assert messages(page.text) == [f"Started {KIND} {txid!r} afresh."]
    again = ticking(txid, after_epoch=dead.epoch)
    assert again.restarts == 0 and again.epoch > dead.epoch

    TransactionTracker.stop(txid)


def test_actions_that_do_not_apply_say_so_and_change_nothing(client: FlaskClient, txid: str) -> None:
    ref = started(txid)

    page = press(client, "start-afresh", txid)

    assert page.request.path == "/tracking/tracker"
    (said,) = messages(page.text)
    assert said.startswith("Not done:") and "not dead" in said
    unknown = press(client, "stop", f"{txid}-unknown")
    assert messages(unknown.text) == [
        f"No {KIND} tracker is registered for '{txid}-unknown' (finished, stopped or never started)."
    ]
    now = TransactionTracker.lookup(txid)
    assert now is not None and (now.status, now.epoch) == (Status.RUNNING, ref.epoch)

    TransactionTracker.stop(txid)


# -- permission and cross-site requests ------------------------------------------------------------


def unchanged(ref: tracking.TrackerRef) -> None:
    """The tracker runs on as it did: no stop recorded, no exit, no new epoch (for a second)."""
    facts = explanation(tracking.client.current().settings, KIND, ref.transaction_id)
    assert facts["entries"][0]["stop_requested"] is None

    def changed() -> tuple[Any, ...] | None:
        now = TransactionTracker.lookup(ref.transaction_id)
        seen = (now.status, now.epoch, now.task_id) if now is not None else ()
        return seen if seen != (ref.status, ref.epoch, ref.task_id) else None

    assert observe(changed, 1.0) is None


def test_without_permission_every_action_is_a_403_and_changes_nothing(
    client: FlaskClient, app: Flask, txid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = started(txid)
    monkeypatch.setitem(app.config, "UI_ACTIONS", False)

    for action in ("stop", "restart", "start-afresh"):
        page = press(client, action, txid)
        assert page.status_code == 403 and 'data-status="403"' in page.text
        said = text_of(page.text, "error-message")
        assert said == f"You are not allowed to {action.replace('-', ' ')} {KIND} {txid!r}."
        response = api(client, action, txid)
        assert response.status_code == 403 and "not allowed" in response.get_json()["error"]
    path, query = detail_url(txid)
    page = client.get(path, query_string=query)
    assert page.status_code == 200 and buttons(page.text) == [] and 'id="no-actions"' in page.text
    unchanged(ref)

    TransactionTracker.stop(txid)


def test_a_cross_site_post_is_refused_and_changes_nothing(client: FlaskClient, txid: str) -> None:
    ref = started(txid)

    for headers in ({"Origin": "https://evil.example"}, {"Referer": "https://evil.example/x"}, {"X": "y"}):
        page = press(client, "stop", txid, **headers)
        assert page.status_code == 403
        assert (text_of(page.text, "error-message") or "").startswith("Cross-site request refused")
    response = client.post(
        "/tracking/api/tracker/stop",
        json={"kind": KIND, "transaction_id": txid},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    form = client.post("/tracking/api/tracker/stop", data={"kind": KIND, "transaction_id": txid})
    assert form.status_code == 415  # what a cross-site form could send
    unchanged(ref)

    page = press(client, "stop", txid, Referer="http://localhost/tracking/tracker")
    assert messages(page.text) == [f"Stopped {KIND} {txid!r}: it has left the registry."]


def test_the_default_permission_lets_anyone_look_and_nobody_act(
    bare_app: Callable[..., Flask], cluster: Cluster, txid: str
) -> None:
    ref = started(txid)
    client = bare_app().test_client()

    assert client.get("/ops/").status_code == 200
    one = client.get("/ops/api/tracker", query_string={"kind": KIND, "transaction_id": txid})
    assert one.status_code == 200
    for action in ("stop", "restart", "start-afresh"):
        assert api(client, action, txid, prefix="/ops").status_code == 403
    unchanged(ref)

    TransactionTracker.stop(txid)


def test_a_permission_may_guard_looking_too_and_is_asked_with_what_is_looked_at(
    bare_app: Callable[..., Flask],
) -> None:
    asked: list[tuple[str, str | None, str | None]] = []

    def nobody(action: str, kind: str | None, transaction_id: str | None) -> bool:
        asked.append((action, kind, transaction_id))
        return False

    permission: Permission = nobody
    client = bare_app(permission=permission).test_client()

    assert client.get("/ops/", query_string={"kind": KIND}).status_code == 403
    response = client.get("/ops/api/tracker", query_string={"kind": KIND, "transaction_id": "txn_1"})
    assert response.status_code == 403 and response.get_json() == {
        "error": "You are not allowed to view trackers transaction 'txn_1'."
    }
    assert asked == [("view", KIND, None), ("view", KIND, "txn_1")]


def test_another_trusted_origin_may_post_and_without_a_secret_key_the_outcome_is_on_the_page(
    bare_app: Callable[..., Flask], txid: str
) -> None:
    app = bare_app(secret_key=None, permission=lambda *_: True, trusted_origins=["https://ops.example/"])
    client = app.test_client()

    page = client.post(
        "/ops/tracker/stop",
        data={"kind": KIND, "transaction_id": txid},
        headers={"Origin": "https://ops.example"},
    )

    assert page.status_code == 404 and 'id="not-registered"' in page.text  # no session to flash into
    assert messages(page.text) == [
        f"No {KIND} tracker is registered for {txid!r} (finished, stopped or never started)."
    ]


def test_the_pages_need_the_extension_initialised_first() -> None:
    with pytest.raises(RuntimeError, match="need the 'Tracking' extension"):
        Flask("no-extension").register_blueprint(blueprint(), url_prefix="/tracking")


# -- the JSON API ----------------------------------------------------------------------------------


def test_the_api_lists_and_shows_trackers_and_answers_actions_with_their_status(
    client: FlaskClient, txid: str
) -> None:
    ref = started(txid)

    listed = client.get("/tracking/api/trackers", query_string={"kind": KIND, "transaction_id": txid})
    assert listed.status_code == 200
    body = listed.get_json()
    assert body["count"] == 1 and body["page"] == 1 and body["pages"] == 1
    (shown,) = body["trackers"]
    assert shown["status"] == "running" and shown["epoch"] == ref.epoch and shown["task_id"] == ref.task_id

    one = client.get("/tracking/api/tracker", query_string={"kind": KIND, "transaction_id": txid})
    assert one.status_code == 200
    body = one.get_json()
    assert body["tracker"]["worker"].startswith("w1@") and body["state"]["required"] == FOREVER
    assert body["history"][0]["event"] == "started" and "running on w1@" in body["explain"]

    assert api(client, "start-afresh", txid).status_code == 409  # it is not dead
    restarted = api(client, "restart", txid)
    assert restarted.status_code == 200 and restarted.get_json()["tracker"]["kind"] == KIND
    ticking(txid, after_epoch=ref.epoch)
    stopped = api(client, "stop", txid)
    assert stopped.status_code == 200 and stopped.get_json()["tracker"] is None
    assert api(client, "stop", txid).status_code == 404
    gone = client.get("/tracking/api/tracker", query_string={"kind": KIND, "transaction_id": txid})
    assert gone.status_code == 404 and gone.get_json()["history"][-1]["event"] == "stopped"


def test_restart_of_a_dead_tracker_is_a_409_and_start_afresh_of_an_unknown_one_a_404(
    client: FlaskClient, txid: str
) -> None:
    started(txid)
    restarted_to_death(client, txid)

    refused = api(client, "restart", txid)
    assert refused.status_code == 409 and "start it afresh" in refused.get_json()["error"]
    assert refused.get_json()["tracker"]["status"] == "dead"
    assert api(client, "start-afresh", f"{txid}-unknown").status_code == 404

    assert api(client, "stop", txid).status_code == 200  # a dead one's entry is removed
    assert entries(txid) == []


@pytest.mark.parametrize(
    ("path", "query", "error"),
    [
        ("/tracking/api/trackers", {"status": "sleeping"}, "unknown status 'sleeping'"),
        ("/tracking/api/trackers", {"per_page": "1000"}, "per_page must be between 1 and 200"),
        ("/tracking/api/trackers", {"page": "two"}, "page must be a whole number"),
        ("/tracking/api/trackers", {"page": "0"}, "page must be between 1 and"),
        ("/tracking/api/trackers", {"transaction_id": "x" * 300}, "at most 255 characters"),
        ("/tracking/api/tracker", {"kind": KIND}, "transaction_id is required"),
        ("/tracking/api/tracker", {"transaction_id": "txn_1"}, "kind is required"),
        ("/tracking/api/tracker", {"kind": KIND, "transaction_id": "a\x07b"}, "control characters"),
    ],
)
def test_bad_input_to_the_api_is_a_400_that_says_why(
    client: FlaskClient, path: str, query: dict[str, str], error: str
) -> None:
    response = client.get(path, query_string=query)
    assert response.status_code == 400 and error in response.get_json()["error"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"kind": KIND, "transaction_id": "x" * 300}, 400),
        ({"kind": KIND, "transaction_id": ""}, 400),
        ({"kind": "", "transaction_id": "txn_1"}, 400),
        ({"kind": KIND, "transaction_id": 12}, 400),
        (["txn_1"], 400),
    ],
)
def test_bad_input_to_an_api_action_is_a_400_and_starts_nothing(
    client: FlaskClient, body: Any, status: int
) -> None:
    before = tracking.client.current().count()
    response = client.post("/tracking/api/tracker/restart", json=body)
    assert response.status_code == status and "error" in response.get_json()
    assert tracking.client.current().count() == before


def test_a_bad_filter_on_the_page_is_a_400_page(client: FlaskClient) -> None:
    page = client.get("/tracking/", query_string={"status": "sleeping"})
    assert page.status_code == 400 and 'data-status="400"' in page.text
    assert "unknown status 'sleeping'" in (text_of(page.text, "error-message") or "")


def test_an_unreachable_registry_is_a_503(bare_app: Callable[..., Flask]) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:9/nothing"  # nothing listens on port 9
    app = bare_app(database_url=url)
    client = app.test_client()
    try:
        response = client.get("/ops/api/trackers")
        assert response.status_code == 503
        assert response.get_json() == {"error": "The tracker registry is unavailable; try again in a moment."}
        page = client.get("/ops/")
        assert page.status_code == 503 and 'data-status="503"' in page.text
    finally:
        registry.dispose(app.extensions["tracking"].settings)


def test_a_registry_never_migrated_is_a_503_that_names_no_database(
    bare_app: Callable[..., Flask], pg_database: str
) -> None:
    # pg_database is empty: no tracking tables (the settings of a test never migrate by themselves).
    app = bare_app(database_url=pg_database)
    client = app.test_client()
    try:
        response = client.get("/ops/api/trackers")
        assert response.status_code == 503
        said = "The tracker registry is not migrated: run `tracking migrate`."
        assert response.get_json() == {"error": said}
        page = client.get("/ops/")
        assert page.status_code == 503
        assert "127.0.0.1" not in page.text and "tracking_trackers" not in page.text
    finally:
        registry.dispose(app.extensions["tracking"].settings)
