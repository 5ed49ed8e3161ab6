"""One ``started`` event per epoch of a transaction ID (Alembic revision 0007): ``manage.py
migrate`` brings the registry to the head of `tracking`'s history again, as 0001 does. No change to
the model."""

import importlib

from django.db import migrations

initial = importlib.import_module("tracking.contrib.django.migrations.0001_initial")

#: the head of `tracking`'s Alembic history the registry is at once this migration has run
ALEMBIC_HEAD = "0007"


class Migration(migrations.Migration):
    # Not in one transaction: Alembic migrates the registry on its own connection (see 0001).
    atomic = False

    dependencies = [("tracking", "0003_rate_limits")]

    operations = [
        migrations.RunPython(initial.upgrade_registry, migrations.RunPython.noop, elidable=False),
    ]
