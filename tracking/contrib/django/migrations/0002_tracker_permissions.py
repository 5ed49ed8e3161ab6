"""The permissions of the admin's actions on trackers (stop, restart now, start afresh): a change of
the unmanaged model's options only, no SQL (``post_migrate`` creates the permissions)."""

from django.db import migrations

#: the head of `tracking`'s Alembic history the registry is at once this migration has run: 0001
#: brought it there, and no revision came since (a test checks that the newest Django migration
#: names the current head: a new revision needs a new migration that runs ``upgrade_registry``)
ALEMBIC_HEAD = "0005"


class Migration(migrations.Migration):
    dependencies = [("tracking", "0001_initial")]

    operations = [
        migrations.AlterModelOptions(
            name="tracker",
            options={
                "managed": False,
                "ordering": ["-id"],
                "permissions": [
                    ("stop_tracker", "Can stop trackers"),
                    ("restart_tracker", "Can restart trackers now"),
                    ("start_tracker", "Can start dead trackers afresh"),
                ],
            },
        ),
    ]
