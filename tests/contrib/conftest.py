"""The examples' web apps against a real registry, broker and workers.

Each example runs on PostgreSQL + Redis (``build_stack``) with workers that import the example's
trackers; the app under test reads the stack's settings from the environment, as in production.
Installing a framework's Celery app makes it the process's current one: each module puts back the
one that was current before it.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.conftest import build_stack
from tests.integration.harness import ROOT, Stack
from tracking import client
from tracking.celery import state


@dataclasses.dataclass
class ExampleStack(Stack):
    """A stack whose workers import an example's trackers (from ``pythonpath`` when given)."""

    imports: str = ""
    pythonpath: tuple[str, ...] = ()

    def env(self) -> dict[str, str]:
        env = super().env()
        env["TRACKING_IMPORTS"] = self.imports
        env["PYTHONPATH"] = os.pathsep.join([*self.pythonpath, str(ROOT)])
        return env

    def web_env(self) -> dict[str, str]:
        """What a web process of the example needs in its environment to use this stack."""
        return {k: v for k, v in self.env().items() if k.startswith("TRACKING_") or k == "CELERY_BROKER_URL"}


def example_stack(
    request: pytest.FixtureRequest, imports: str, pythonpath: tuple[str, ...] = ()
) -> Iterator[ExampleStack]:
    for stack in build_stack(request, "postgres-redis"):
        fields = {f.name: getattr(stack, f.name) for f in dataclasses.fields(Stack)}
        yield ExampleStack(**fields, imports=imports, pythonpath=pythonpath)


@pytest.fixture(scope="module", autouse=True)
def _restore_the_current_celery_app() -> Iterator[None]:
    with state.lock:
        before, current = list(state.installed), client.installed()
    yield
    with state.lock:
        state.installed[:] = before
        if current is not None:
            client.use(current)


@pytest.fixture
def txid() -> str:
    return f"txn_{uuid.uuid4().hex}"
