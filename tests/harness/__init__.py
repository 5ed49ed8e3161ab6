"""The one harness of every tier that needs a registry, a broker or workers.

- ``stacks``: a stack (a registry database and a broker) by name, on the session's shared servers
  or on servers of a test's own; its settings, its Celery app and its processes' environment.
- ``cluster``: real worker and beat processes on a stack.
- ``polling``: bounded waits, and the registry conditions tests wait on.
- ``threads``: operations released together on threads, for races.

tests/conftest.py turns these into fixtures that modules configure with markers instead of
declaring fixtures of their own:

- ``pytestmark = pytest.mark.stacks("postgres-redis", ...)``: the stacks the module's ``stack``
  fixture is parametrized over (all of ``STACKS`` without the marker), with options for all of
  them (``StackSpec``: side tables, the workers' imports, a password in the database URL, a stack
  of each test's own).
- ``pytestmark = pytest.mark.cluster(workers=("w1",), beat=False)``: the workers and beat the
  ``cluster`` fixture starts (``ClusterSpec``; w1, w2 and beat without the marker), shared by the
  module's tests, or a cluster of each test's own (``each_test=True``).
"""

from tests.harness.cluster import Cluster, ClusterSpec, free_port
from tests.harness.polling import during, in_status, observe, running, wait_for
from tests.harness.stacks import (
    AMQP_HOST,
    REDIS_URL,
    ROOT,
    STACKS,
    TIMINGS,
    Stack,
    StackSpec,
    build_stack,
    current_celery_app_restored,
    empty_registry,
    migrated,
    stack_on,
    stack_specs,
)
from tests.harness.threads import all_at_once, at_once

__all__ = [
    "AMQP_HOST",
    "REDIS_URL",
    "ROOT",
    "STACKS",
    "TIMINGS",
    "Cluster",
    "ClusterSpec",
    "Stack",
    "StackSpec",
    "all_at_once",
    "at_once",
    "build_stack",
    "current_celery_app_restored",
    "empty_registry",
    "free_port",
    "in_status",
    "migrated",
    "running",
    "stack_on",
    "stack_specs",
    "during",
    "observe",
    "wait_for",
]
