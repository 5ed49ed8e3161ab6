"""Run as a script by test_transactions_django.py: a minimal Django project on the registry's own
database (``sys.argv[1]``, a SQLAlchemy URL), which writes an order and starts its tracker in an
atomic block, once rolled back (``sys.argv[2]``) and once committed (``sys.argv[3]``). Prints what
each ``start`` returned and what the registry held before the commit, as JSON.

A script, not a test module: Django is set up once per process, and the Django tests of this
suite set it up with the example project's settings.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import django
import sqlalchemy as sa
from django.conf import settings


class Rollback(Exception):
    pass


def django_database(url: str) -> dict[str, Any]:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": parsed.database}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parsed.database,
        "USER": parsed.username or "",
        "HOST": parsed.host or "",
        "PORT": str(parsed.port or ""),
    }


def ref_json(ref: Any) -> dict[str, Any]:
    return {"on_commit": ref.on_commit, "task_id": ref.task_id, "already_started": ref.already_started}


def main(url: str, rolled_back: str, committed: str, other_database: str) -> None:
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "tracking.contrib.django"],
        DATABASES={
            "default": django_database(url),
            "orders": {"ENGINE": "django.db.backends.sqlite3", "NAME": other_database},
        },
        USE_TZ=True,
    )
    django.setup()
    from django.db import connection, transaction

    from tests.integration.trackers import Counter
    from tracking import registry, signals

    registry_settings = django.apps.apps.get_app_config("tracking").settings
    published: list[str] = []  # tracker_started: sent once a new entry is recorded and published

    def on_started(sender: str, transaction_id: str, **_kw: Any) -> None:
        published.append(transaction_id)

    signals.tracker_started.connect(on_started)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS test_django_orders (id VARCHAR(255) PRIMARY KEY)")
    out: dict[str, Any] = {}
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO test_django_orders (id) VALUES (%s)", [rolled_back])
            out["rolled_back"] = ref_json(Counter.start(rolled_back))
            raise Rollback
    except Rollback:
        pass
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO test_django_orders (id) VALUES (%s)", [committed])
        out["committed"] = ref_json(Counter.start(committed))
        out["entry_before_commit"] = registry.get(registry_settings, Counter.kind, committed) is not None
        out["published_before_commit"] = list(published)
    out["entry_after_commit"] = registry.get(registry_settings, Counter.kind, committed) is not None
    out["published"] = published
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM test_django_orders ORDER BY id")
        out["orders"] = [row[0] for row in cursor.fetchall()]
        cursor.execute("DROP TABLE test_django_orders")
    out.update(two_databases(f"{rolled_back}_other_db"), **fails_after_commit(f"{committed}_failing"))
    print(json.dumps(out))


def two_databases(txid: str) -> dict[str, Any]:
    """The request's block on "default" commits, the order's own block on "orders" rolls back."""
    from django.db import connections, transaction

    from tests.integration.trackers import Counter

    with transaction.atomic(using="default"):
        connections["default"].cursor().execute("SELECT 1")
        try:
            with transaction.atomic(using="orders"):
                Counter.start(txid)
                raise Rollback
        except Rollback:
            pass
    return {"other_db_started": Counter.lookup(txid) is not None}


def fails_after_commit(txid: str) -> dict[str, Any]:
    """The registry fails the start made after the commit (a fault injected here): the block's
    commit stands, the caller gets no error, and the project's own later on_commit hook runs."""
    from django.db import transaction

    from tests.integration.trackers import Counter
    from tracking import RegistryUnavailable, registry

    real, hooks = registry.start, []

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise RegistryUnavailable("injected: the registry is down")

    registry.start = unavailable
    try:
        with transaction.atomic():
            Counter.start(txid)
            transaction.on_commit(lambda: hooks.append("receipt sent"))
        raised = None
    except Exception as exc:
        raised = repr(exc)
    finally:
        registry.start = real
    return {"failing_raised": raised, "failing_hooks": hooks}


if __name__ == "__main__":
    main(*sys.argv[1:5])
