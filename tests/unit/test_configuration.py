"""How `celery -A tracking` reads its configuration (a fresh interpreter per case: no services)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = (
    "import json; from tracking.celery import app, current_settings; s = current_settings(); "
    "print(json.dumps([app.conf.worker_concurrency, app.conf.task_serializer, app.conf.broker_url, "
    "s.lease_seconds, list(app.conf.imports)]))"
)


def probe(folder: Path, **env: str) -> list[object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKING_", "CELERY_"))}
    clean.pop("PYTHONPATH", None)
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=folder,
        env={**clean, **env},
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    result: list[object] = json.loads(out.strip().splitlines()[-1])
    return result


def test_celeryconfig_in_the_working_folder_overrides_the_recommended_settings(tmp_path: Path) -> None:
    (tmp_path / "celeryconfig.py").write_text(
        "worker_concurrency = 8\nbroker_url = 'redis://127.0.0.1:6379/3'\ntracking_lease_seconds = 42\n"
    )
    concurrency, serializer, broker, lease, _imports = probe(tmp_path)
    assert (concurrency, serializer, broker, lease) == (8, "json", "redis://127.0.0.1:6379/3", 42)


def test_environment_variables_win_over_celeryconfig(tmp_path: Path) -> None:
    (tmp_path / "celeryconfig.py").write_text("tracking_lease_seconds = 42\n")
    assert probe(tmp_path, TRACKING_LEASE_SECONDS="30")[3] == 30


def test_tracking_imports_become_the_worker_s_imports(tmp_path: Path) -> None:
    assert probe(tmp_path, TRACKING_IMPORTS="mytrackers, other.trackers")[4] == [
        "mytrackers",
        "other.trackers",
    ]
