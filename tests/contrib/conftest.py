"""The examples' web apps against a real registry, broker and workers.

Each example runs on PostgreSQL + Redis with workers that import the example's trackers
(``pytest.mark.stacks("postgres-redis", imports=...)``); the app under test reads the stack's
settings from the environment, as in production. Installing a framework's Celery app makes it the
process's current one: each module puts back the one that was current before it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import current_celery_app_restored


@pytest.fixture(scope="module", autouse=True)
def _restore_the_current_celery_app() -> Iterator[None]:
    """Each module puts back the Celery app (and client) that was current before it."""
    with current_celery_app_restored():
        yield
