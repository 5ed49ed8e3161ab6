"""The Django app: settings from Django settings, ``manage.py tracking_migrate`` and
``manage.py tracking ...``, system checks, and the tracker admin (the list, each tracker's history,
actions an operator takes with their permissions, the workers page; see ``admin.py``).

Add ``"tracking.contrib.django"`` to ``INSTALLED_APPS``. When the app is ready it reads the
``TRACKING_*`` settings once (the ``TRACKING_*`` environment variables win over them) into a
:class:`tracking.Settings`; without ``TRACKING_DATABASE_URL`` the registry lives in
``DATABASES["default"]`` (PostgreSQL or SQLite). It imports the ``trackers`` module of every
installed app, and installs `tracking` onto the Celery app named by ``TRACKING_CELERY_APP`` (a
dotted path, such as ``"proj.celery.app"``) or else onto one it builds with the recommended
settings and the project's ``CELERY_*`` settings. See ``apps.py`` and ``conf.py``.
"""
