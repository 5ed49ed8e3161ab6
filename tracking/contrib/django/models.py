"""The registry's table, as Django sees it: an unmanaged model, so that the admin can list it.

Django never creates, alters or writes this table (``managed = False``): Alembic owns its schema
(``manage.py tracking_migrate``) and `tracking` its rows. It maps the columns worth reading; the
bookkeeping ones (restart times, mailbox positions, worker IDs) are left out.
"""

from __future__ import annotations

from django.db import models

from tracking.registry import Status


class Tracker(models.Model):
    """One registered tracker: the row ``lookup`` reads."""

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=255)
    transaction_id = models.CharField("transaction ID", max_length=255)
    status = models.CharField(max_length=16, choices=[(s.value, s.value) for s in Status])
    restarts = models.IntegerField()
    #: the Celery worker hostname that runs (or last ran) it
    worker = models.CharField(max_length=255, null=True)
    task_id = models.CharField("task ID", max_length=64)
    epoch = models.BigIntegerField(help_text="the fencing token of the current incarnation")
    args = models.JSONField("start arguments")
    state = models.JSONField("last checkpointed state", null=True)
    policy = models.JSONField("restart policy")
    stop_reason = models.CharField(max_length=255, null=True)
    last_error = models.TextField(null=True)
    started_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True)
    checkpoint_at = models.DateTimeField("last checkpoint at", null=True)
    due_at = models.DateTimeField(
        null=True, help_text="pending: published again then; failed: restarted then"
    )

    class Meta:
        managed = False
        db_table = "tracking_trackers"
        ordering = ["-id"]  # the primary key's index: cheap on a registry of millions
        #: what the admin's actions need beside ``view_tracker`` (see ``admin.py``)
        permissions = [
            ("stop_tracker", "Can stop trackers"),
            ("restart_tracker", "Can restart trackers now"),
            ("start_tracker", "Can start dead trackers afresh"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.transaction_id}"
