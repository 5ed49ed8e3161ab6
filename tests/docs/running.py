"""Running the blocks of a page as a reader pastes them: each in a process of its own with a time
limit, in one folder of the page's own, in page order, on the embedded default."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.docs.blocks import PYTHON, Block, commands

#: seconds a block may take: every block that runs is a quick, bounded command
TIMEOUT = 60.0

_POSTGRESQL_URL = re.compile(r"postgresql(?:\+\w+)?://[^\s\"'`]+")


@dataclass(frozen=True)
class Failure:
    """A block that did not run as pasted."""

    block: Block
    reason: str
    output: str

    def __str__(self) -> str:
        script = self.block.text.rstrip("\n")
        return (
            f"{self.block.where}: {self.reason}\n"
            f"--- the block ---\n{script}\n--- its output ---\n{self.output}"
        )


def clean_env(database_url: str | None = None) -> dict[str, str]:
    """The caller's environment without any setting of tracking or Celery (so the embedded default),
    with this interpreter's ``bin`` first on PATH (its ``python``, ``tracking`` and ``celery``)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TRACKING_", "CELERY_")) and key not in ("PYTHONPATH", "PYTHONSTARTUP")
    }
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if database_url is not None:
        env["TRACKING_DATABASE_URL"] = database_url
    return env


def text_of(block: Block, database_url: str | None) -> str:
    """The block's text, with its PostgreSQL URLs pointing at ``database_url`` when it runs there."""
    if database_url is None:
        return block.text
    return _POSTGRESQL_URL.sub(database_url, block.text)


def command(block: Block, database_url: str | None = None) -> list[str]:
    """How the block runs: Python with ``-c`` (the working folder on ``sys.path``, as in an
    interpreter), a file block by importing it, shell with ``bash -eu -o pipefail``."""
    if block.language in PYTHON:
        if block.file is None:
            return [sys.executable, "-c", text_of(block, database_url)]
        parts = block.file.removesuffix(".py").split("/")
        if all(part.isidentifier() for part in parts):
            return [sys.executable, "-c", f"import {'.'.join(parts)}"]
        return [sys.executable, block.file]
    script = commands(Block(block.page, block.line, block.language, text_of(block, database_url), None))
    return ["bash", "-e", "-u", "-o", "pipefail", "-c", script]


def run_block(block: Block, folder: Path, database_url: str | None, timeout: float) -> Failure | None:
    """Run one block in ``folder``; its failure, or None."""
    process = subprocess.Popen(
        command(block, database_url),
        cwd=folder,
        env=clean_env(database_url),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout ends whatever it started
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        reason = (
            f"did not finish within {timeout:g} s: a process that runs until stopped is an excerpt "
            f"(<!-- excerpt: why -->)"
        )
        return Failure(block, reason, output[-3000:])
    if process.returncode == 0:
        return None
    reason = f"exited with status {process.returncode}"
    if block.language in PYTHON and block.file is None:
        reason += f' (line N of a traceback\'s File "<string>" is line {block.line} + N of the page)'
    return Failure(block, reason, output[-3000:])


def run_page(
    blocks: Iterable[Block], folder: Path, database_url: str | None = None, timeout: float = TIMEOUT
) -> list[Failure]:
    """Run the blocks marked ``runs`` (and ``runs: postgresql``, on ``database_url``) in page order in
    ``folder``, after saving every file block not marked as an excerpt; the ones that failed."""
    failures: list[Failure] = []
    for block in blocks:
        if not block.counted or block.excerpt or block.marker is None:
            continue
        on = database_url if block.marker.detail == "postgresql" else None
        if block.marker.detail == "postgresql" and database_url is None:
            raise ValueError(f"{block.where} runs on PostgreSQL: give run_page a database_url")
        if block.file is not None:
            path = folder / block.file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text_of(block, on), encoding="utf-8")
        if block.run_here:
            failure = run_block(block, folder, on, timeout)
            if failure is not None:
                failures.append(failure)
    return failures
