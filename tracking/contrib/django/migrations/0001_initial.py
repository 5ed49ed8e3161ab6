"""The registry's tables, created and upgraded by ``manage.py migrate`` (the Alembic history of
`tracking` underneath: the same revisions ``tracking migrate`` applies), and the unmanaged model
the admin lists.

Each later Alembic revision of `tracking` comes with a Django migration that runs
:func:`upgrade_registry` again, so that ``manage.py migrate`` keeps the tables at their head.
"""

from typing import Any

from django.db import migrations, models

#: the head of `tracking`'s Alembic history this migration brings the registry to (a test checks
#: that the newest Django migration names the current head: a new revision needs a new migration)
ALEMBIC_HEAD = "0005"


def upgrade_registry(apps: Any, schema_editor: Any) -> None:
    """Bring the registry the project is configured with to the head of `tracking`'s history, when
    the project's default database is the one being migrated."""
    from django.apps import apps as installed
    from django.db import DEFAULT_DB_ALIAS

    from tracking import registry

    if schema_editor.connection.alias != DEFAULT_DB_ALIAS:
        return  # `manage.py tracking_migrate --database ALIAS` puts the registry elsewhere
    registry.migrate(installed.get_app_config("tracking").settings)


class Migration(migrations.Migration):
    # Not in one transaction: Alembic migrates the registry on its own connection, which a
    # transaction holding SQLite's write lock here would stall.
    atomic = False
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="Tracker",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("kind", models.CharField(max_length=255)),
                ("transaction_id", models.CharField(max_length=255, verbose_name="transaction ID")),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("pending", "pending"),
                            ("running", "running"),
                            ("parked", "parked"),
                            ("failed", "failed"),
                            ("dead", "dead"),
                        ],
                        max_length=16,
                    ),
                ),
                ("restarts", models.IntegerField()),
                ("worker", models.CharField(max_length=255, null=True)),
                ("task_id", models.CharField(max_length=64, verbose_name="task ID")),
                ("epoch", models.BigIntegerField(help_text="the fencing token of the current incarnation")),
                ("args", models.JSONField(verbose_name="start arguments")),
                ("state", models.JSONField(null=True, verbose_name="last checkpointed state")),
                ("policy", models.JSONField(verbose_name="restart policy")),
                ("stop_reason", models.CharField(max_length=255, null=True)),
                ("last_error", models.TextField(null=True)),
                ("started_at", models.DateTimeField()),
                ("claimed_at", models.DateTimeField(null=True)),
                ("checkpoint_at", models.DateTimeField(null=True, verbose_name="last checkpoint at")),
                (
                    "due_at",
                    models.DateTimeField(
                        help_text="pending: published again then; failed: restarted then", null=True
                    ),
                ),
            ],
            options={
                "db_table": "tracking_trackers",
                "ordering": ["-id"],
                "managed": False,
            },
        ),
        migrations.RunPython(upgrade_registry, migrations.RunPython.noop, elidable=False),
    ]
