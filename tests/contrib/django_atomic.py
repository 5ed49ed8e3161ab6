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


def main(url: str, rolled_back: str, committed: str) -> None:
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "tracking.contrib.django"],
        DATABASES={"default": django_database(url)},
        USE_TZ=True,
    )
    django.setup()
    from django.db import connection, transaction

    from tests.integration.trackers import Counter
    from tracking import registry, signals

    registry_settings = django.apps.apps.get_app_config("tracking").settings
    published: list[str] = []  # tracker_started is sent once a new entry's message is published

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
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:4])
