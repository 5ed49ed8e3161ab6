"""The README's quick start, pasted into a new folder, runs a tracker to Done: its module, its
``tracking migrate``, its worker and beat (as real processes, started with the README's own
command lines), and its Python session, on the embedded default. Nothing here sets a ``TRACKING_*``
variable but the one the README exports."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.docs.blocks import ROOT, Block, page_blocks
from tests.harness import wait_for

README = ROOT / "README.md"
TXID = "txn_01dp371w0fnjhf9z2tjebx4vr4"  # the README's


def quick_start() -> list[Block]:
    """The quick start's blocks, in order: the module, the migrate step, worker and beat, the session."""
    blocks = page_blocks(README)
    first = next(i for i, b in enumerate(blocks) if b.file == "myapp/trackers.py")
    found = blocks[first : first + 4]
    assert [b.language for b in found] == ["python", "bash", "bash", "python"], found
    return found


def environment(folder: Path) -> dict[str, str]:
    """This process's environment less every TRACKING_*/CELERY_* variable (a new terminal), with
    the venv's commands on the PATH, as an installed `tracking` has them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKING_", "CELERY_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(folder)
    return env


def commands(block: Block) -> list[str]:
    """A shell block's command lines, comments and blank lines left out."""
    lines = (line.split("#", 1)[0].strip() for line in block.text.splitlines())
    return [line for line in lines if line]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    return tmp_path


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def test_the_readme_quick_start_pasted_into_a_new_folder_runs_a_tracker_to_done(
    folder: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    module, migrate, worker_and_beat, session = quick_start()
    (folder / "myapp" / "trackers.py").write_text(module.text)
    env = environment(folder)

    # The migrate step as pasted (it exports TRACKING_IMPORTS): bash, in the folder.
    done = subprocess.run(
        ["bash", "-euc", f"{migrate.text}\nenv | grep ^TRACKING_"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    exported = dict(line.split("=", 1) for line in done.stdout.splitlines() if line.startswith("TRACKING_"))
    assert exported == {"TRACKING_IMPORTS": "myapp.trackers"}
    env.update(exported)  # "in every terminal"

    for line in commands(worker_and_beat):  # each in a terminal of its own, its output to a file
        with (folder / f"{line.split()[3]}.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    shlex.split(line),
                    cwd=folder,
                    env=env,
                    start_new_session=True,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    started = subprocess.run(
        [sys.executable, "-c", session.text], cwd=folder, env=env, capture_output=True, text=True, timeout=120
    )
    assert started.returncode == 0, started.stderr

    registry = sa.create_engine(f"sqlite:///{folder / 'tracking.sqlite3'}")
    try:

        def finished() -> bool:
            with registry.connect() as conn:
                query = "SELECT event FROM tracking_events WHERE transaction_id = :t ORDER BY id"
                events = conn.execute(sa.text(query), {"t": TXID}).scalars().all()
                left = conn.execute(
                    sa.text("SELECT count(*) FROM tracking_trackers WHERE transaction_id = :t"), {"t": TXID}
                ).scalar_one()
            return "done" in events and left == 0

        wait_for(finished, timeout=90, interval=0.5, what="the quick start's tracker to be done")
        for process in processes:
            assert process.poll() is None, "a worker or beat of the quick start exited"
    finally:
        registry.dispose()
