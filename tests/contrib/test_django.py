"""The Django app, driven through the example project with Django's test client (pytest-django)
against a real worker on PostgreSQL + Redis (the project set up on the module's stack by the
fixtures of tests/contrib/django_project.py)."""

from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from celery import Celery
from tracking.migrations import alembic_config

import tracking
from tests.contrib.django_project import (  # noqa: F401 (the module's fixtures)
    EXAMPLE,
    django_db_blocker,
    django_db_setup,
    django_project,
    django_test_environment,
    project_env,
    project_is_current,
)
from tests.harness import ROOT, Cluster, Stack, wait_for
from tracking import celery as glue
from tracking import registry

FOREVER = 1_000_000  # confirmations no test waits for
CHANGELIST = "/admin/tracking/tracker/"


pytestmark = [
    pytest.mark.stacks("postgres-redis", imports="transactions.trackers", pythonpath=(str(EXAMPLE),)),
    pytest.mark.cluster(workers=("w1",), beat=True),
]


def tracker(client: Any, txid: str) -> tuple[int, dict[str, Any]]:
    response = client.get(f"/transactions/{txid}/tracker")
    return response.status_code, response.json()


def running(client: Any, txid: str, other_than: str | None = None) -> dict[str, Any] | None:
    status, body = tracker(client, txid)
    ok = status == 200 and body["status"] == "running" and body["task_id"] != other_than
    return body if ok and body["state"] is not None else None  # running, and checkpointed


def runs(client: Any, txid: str) -> Callable[[], dict[str, Any] | None]:
    """A condition for ``wait_for``: the tracker runs (see ``running``)."""
    return lambda: running(client, txid)


def transaction_tracker() -> type[tracking.Tracker]:
    """The example project's tracker: its module is importable once Django is set up with the
    project's folder on the path (so it is not imported above, nor known to mypy)."""
    tracker: type[tracking.Tracker] = importlib.import_module("transactions.trackers").TransactionTracker
    return tracker


def track(client: Any, txid: str, confirmations: int) -> Any:
    return client.post(
        f"/transactions/{txid}/track", {"confirmations": confirmations}, content_type="application/json"
    )


def test_a_tracker_started_from_a_view_is_found_restarted_after_a_crash_and_gone_once_stopped(
    client: Any, cluster: Cluster, txid: str
) -> None:
    TransactionTracker = transaction_tracker()

    response = track(client, txid, FOREVER)
    assert response.status_code == 202 and response["Location"] == f"/transactions/{txid}/tracker"
    started = response.json()
    assert started["transaction_id"] == txid and started["already_started"] is False

    first = wait_for(lambda: running(client, txid), what="the tracker to run")
    assert first["task_id"] == started["task_id"] and first["restarts"] == 0
    assert first["worker"].startswith("w1@") and first["state"]["required"] == FOREVER
    assert track(client, txid, 3).json()["already_started"] is True

    TransactionTracker.stop(txid, reason="crash")
    second = wait_for(lambda: running(client, txid, other_than=first["task_id"]), what="the restart")
    assert second["restarts"] == 1 and second["state"]["required"] == FOREVER

    TransactionTracker.stop(txid)
    assert tracker(client, txid) == (404, {"error": "not found"})


def test_a_tracker_that_reaches_its_confirmations_leaves_and_its_lookup_answers_404(
    client: Any, cluster: Cluster, txid: str
) -> None:
    assert track(client, txid, 2).status_code == 202
    wait_for(lambda: tracker(client, txid)[0] == 404, what="the tracker to finish")
    assert tracker(client, txid) == (404, {"error": "not found"})


def test_bad_input_to_the_track_view_is_a_400(client: Any) -> None:
    assert track(client, "x" * 300, 3).status_code == 400
    assert track(client, "txn_bad", 0).status_code == 400
    response = client.post("/transactions/txn_bad/track", "{", content_type="application/json")
    assert response.status_code == 400 and response.json() == {"error": "the body must be JSON"}
    assert tracker(client, "txn_bad") == (404, {"error": "not found"})


def test_the_admin_lists_trackers_read_only_filtered_by_status_and_kind_and_searched_by_id(
    client: Any, cluster: Cluster, transactional_db: None, django_user_model: Any
) -> None:
    # transactional_db, not db: a start inside the test's atomic block would wait for its commit.
    TransactionTracker = transaction_tracker()

    django_user_model.objects.create_superuser("admin", "admin@example.com", "a-long-password")
    assert client.login(username="admin", password="a-long-password")
    ours, other = "txn_admin_ours", "txn_admin_other"
    for txid in (ours, other):
        track(client, txid, FOREVER)
        wait_for(runs(client, txid), what="the tracker to run")
    try:
        page = client.get(CHANGELIST)
        assert page.status_code == 200
        assert ours in page.text and other in page.text

        page = client.get(CHANGELIST, {"status__exact": "running", "kind": "transaction"})
        assert ours in page.text and other in page.text
        assert client.get(CHANGELIST, {"status__exact": "dead"}).text.count("txn_admin_") == 0

        page = client.get(CHANGELIST, {"q": ours})
        assert ours in page.text and other not in page.text

        from tracking.contrib.django.models import Tracker

        entry = Tracker.objects.get(transaction_id=ours)
        detail = client.get(f"{CHANGELIST}{entry.pk}/change/")
        assert detail.status_code == 200
        assert "Why (tracking explain)" in detail.text and "running on w1@" in detail.text
        assert "Save" not in detail.text  # read-only: no form to submit

        assert client.get(f"{CHANGELIST}add/").status_code == 403
        assert client.post(f"{CHANGELIST}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
        assert TransactionTracker.lookup(ours) is not None
    finally:
        for txid in (ours, other):
            TransactionTracker.stop(txid)


def test_the_admin_list_needs_a_logged_in_user(client: Any, db: None) -> None:
    response = client.get(CHANGELIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_tracking_migrate_creates_the_registry_table_in_a_database_of_the_project(
    monkeypatch: pytest.MonkeyPatch, pg_databases: Callable[[], str], tmp_path: Path
) -> None:
    from django.conf import settings
    from django.core.management import call_command

    fresh = sa.make_url(pg_databases())
    databases = {
        "fresh": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": fresh.database,
            "USER": fresh.username,
            "PASSWORD": "not-shown",
            "HOST": fresh.host,
            "PORT": fresh.port,
        },
        "file": {"ENGINE": "django.db.backends.sqlite3", "NAME": tmp_path / "fresh.sqlite3"},
    }
    for alias, database in databases.items():  # not override_settings: Django warns about DATABASES
        monkeypatch.setitem(settings.DATABASES, alias, database)
    for alias, url in [
        ("fresh", fresh.set(password=None).render_as_string(hide_password=False)),
        ("file", f"sqlite:///{tmp_path}/fresh.sqlite3"),
    ]:
        out = io.StringIO()
        call_command("tracking_migrate", "--database", alias, stdout=out)
        assert "migrated to head" in out.getvalue() and "not-shown" not in out.getvalue()
        engine = sa.create_engine(url)
        try:
            assert "tracking_trackers" in sa.inspect(engine).get_table_names()
        finally:
            engine.dispose()


def test_tracking_migrate_without_options_migrates_the_configured_registry() -> None:
    from django.apps import apps
    from django.core.management import call_command

    out = io.StringIO()
    call_command("tracking_migrate", stdout=out)
    settings = apps.get_app_config("tracking").settings
    assert f"registry at {settings.database_url} migrated to head" in out.getvalue()


def test_manage_py_tracking_runs_the_tracking_command_with_the_project_s_settings(
    client: Any, cluster: Cluster, txid: str
) -> None:
    from django.core.management import call_command

    TransactionTracker = transaction_tracker()

    track(client, txid, FOREVER)
    ref = wait_for(lambda: running(client, txid), what="the tracker to run")
    out = io.StringIO()
    call_command("tracking", "lookup", txid, "--kind", "transaction", "--json", stdout=out)
    assert json.loads(out.getvalue())["task_id"] == ref["task_id"]

    out = io.StringIO()
    call_command("tracking", "ls", "--kind", "transaction", "--status", "running", stdout=out)
    assert txid in out.getvalue()

    TransactionTracker.stop(txid)
    err = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("tracking", "lookup", txid, "--kind", "transaction", stderr=err)
    assert exited.value.code == 1 and "no live transaction tracker" in err.getvalue()


def manage_py(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """``python manage.py ARGS...`` of the example project in a process of its own, on the stack's
    database (the registry derived from ``DATABASES``, as in ``django_project``)."""
    env = {**os.environ, **project_env(stack), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "manage.py", *args]
    return subprocess.run(command, cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.fleet
def test_manage_py_tracking_parses_its_arguments_with_the_tracking_commands(
    client: Any, cluster: Cluster, stack: Stack, txid: str
) -> None:
    TransactionTracker = transaction_tracker()

    usage = manage_py(stack, "tracking", "lookup", "--help")
    assert usage.returncode == 0, usage.stderr
    assert usage.stdout.startswith("Usage: manage.py tracking lookup [OPTIONS] TRANSACTION_ID")
    assert "Exit codes:" in manage_py(stack, "tracking", "--help").stdout

    track(client, txid, FOREVER)
    ref = wait_for(lambda: running(client, txid), what="the tracker to run")
    # Django's own options go before the command's name.
    listed = manage_py(
        stack, "tracking", "--settings", "project.settings", "list", "--kind", "transaction", "--json"
    )
    assert listed.returncode == 0, listed.stderr
    assert ref["task_id"] in {entry["task_id"] for entry in json.loads(listed.stdout)}
    TransactionTracker.stop(txid)

    missing = manage_py(stack, "tracking", "lookup", txid, "--kind", "transaction", "--json")
    assert missing.returncode == 1 and json.loads(missing.stdout) is None
    assert "no live transaction tracker" in missing.stderr
    assert manage_py(stack, "tracking", "ls", "--status", "sleeping").returncode == 2


OWN_CELERY = Celery("the-project", set_as_current=False)
OWN_CELERY.conf.update(beat_schedule={"nightly": {"task": "project.nightly", "schedule": 86400.0}})


def test_tracking_celery_app_names_the_project_s_own_celery_app_which_gets_the_tracker_tasks(
    settings: Any,
) -> None:
    from django.apps import AppConfig

    settings.TRACKING_CELERY_APP = f"{__name__}.OWN_CELERY"
    config = AppConfig.create("tracking.contrib.django")
    config.ready()

    assert config.celery is OWN_CELERY and glue.current_app() is OWN_CELERY
    assert "tracking.transaction" in OWN_CELERY.tasks and "tracking.supervise" in OWN_CELERY.tasks
    assert set(OWN_CELERY.conf.beat_schedule) == {"nightly", "tracking-supervisor"}
    registry.dispose(config.settings)


def test_manage_py_migrate_on_a_fresh_database_creates_the_registry_and_then_a_tracker_starts(
    stack: Stack, pg_databases: Callable[[], str]
) -> None:
    """One step, as for any Django app: ``manage.py migrate`` (no ``tracking_migrate``), then
    ``start`` records the tracker in the project's own database."""
    fresh = sa.make_url(pg_databases())
    env = {
        **os.environ,
        **project_env(stack),
        "POSTGRES_DB": fresh.database or "",
        "PYTHONPATH": str(ROOT),
    }

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=EXAMPLE,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    migrated = manage("migrate", "--verbosity", "1")
    assert migrated.returncode == 0, migrated.stderr
    assert "tracking.0001_initial... OK" in migrated.stdout
    assert manage("makemigrations", "--check", "--dry-run", "tracking").returncode == 0
    started = manage("tracking", "start", "t-after-migrate", "--kind", "transaction", "--json")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["transaction_id"] == "t-after-migrate"
    engine = sa.create_engine(fresh.set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM tracking_alembic_version")).scalar_one()
            entries = conn.execute(sa.text("SELECT count(*) FROM tracking_trackers")).scalar_one()
    finally:
        engine.dispose()
    head = ScriptDirectory.from_config(alembic_config(str(fresh))).get_current_head()
    assert (version, entries) == (head, 1)
