"""``tracking start --from-file``: a thousand IDs, invalid lines reported, rich progress on a terminal.

No worker runs in this module: the entries stay pending, which is all a bulk start promises.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import redis

from tests.cli.conftest import CANARY, CANARY_STACK, Cli
from tests.cli.runner import SUMMARY, TRACKING
from tests.harness import REDIS_URL, Stack
from tests.integration.trackers import Counter

pytestmark = CANARY_STACK

#: the terminal's control sequences (colours, cursor moves, line erases) rich draws the bar with
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def write_ids(path: Path, ids: list[str], extra: str = "") -> Path:
    path.write_text("# transactions to follow\n\n" + "\n".join(ids) + "\n" + extra)
    return path


def run_on_a_terminal(stack: Stack, *args: str, timeout: float = 120.0) -> tuple[int, str, str]:
    """Run ``tracking ARGS...`` with stderr on a pseudo-terminal; returns (code, stdout, terminal)."""
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [*TRACKING, *args],
        env=stack.env(),
        cwd=stack.folder,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
    ) as proc:
        os.close(follower)
        seen = bytearray()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([leader], [], [], 0.5)
                if not ready:
                    if proc.poll() is not None:
                        break
                    continue
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            else:
                proc.kill()
                raise AssertionError(f"tracking {args} did not finish within {timeout} s")
            assert proc.stdout is not None
            out = proc.stdout.read().decode()
            code = proc.wait(timeout=30)
        finally:
            os.close(leader)
    return code, out, seen.decode(errors="replace")


def test_a_thousand_ids_from_a_file_are_started_and_invalid_lines_reported(
    cli: Cli, stack: Stack, tmp_path: Path, txid: str
) -> None:
    ids = [f"{txid}-{i:04d}" for i in range(1000)]
    path = write_ids(tmp_path / "ids.txt", ids[:500] + ["bad\x07bell"] + ids[500:], "x" * 256 + "\n\n")

    result = cli("start", "--kind", "Counter", "--from-file", str(path))
    assert result.returncode == 2, "some lines were invalid"
    assert result.stdout == ""
    assert "ids.txt:503: skipped: a transaction ID must not contain control characters" in result.stderr
    assert "ids.txt:1004: skipped: a transaction ID must be at most 255 characters" in result.stderr
    assert "\r" not in result.stderr, "no progress bar when stderr is not a terminal"
    summary = SUMMARY.search(result.stderr)
    assert summary is not None, result.stderr
    assert summary.groupdict() == {"started": "1000", "existing": "0", "invalid": "2", "total": "1002"}
    assert result.stderr.rstrip().endswith("/s)"), "the summary line comes last"

    listed = {ref.transaction_id for ref in Counter.list() if ref.transaction_id.startswith(txid)}
    assert listed == set(ids)
    broker = redis.Redis.from_url(REDIS_URL)
    try:  # several starts are in flight at once: every one was published all the same
        assert broker.llen(f"{stack.redis_prefix}{stack.queue}") == 1000
    finally:
        broker.close()


def test_a_second_run_of_the_same_file_starts_nothing_new_and_json_has_one_line_per_id(
    cli: Cli, tmp_path: Path, txid: str
) -> None:
    ids = [f"{txid}-{i}" for i in range(20)]
    path = write_ids(tmp_path / "ids.txt", ids)
    first = cli("start", "--kind", "Counter", "--from-file", str(path), "--json")
    assert first.returncode == 0, first.stderr
    refs = [json.loads(line) for line in first.stdout.splitlines()]
    assert [r["transaction_id"] for r in refs] == ids
    assert not any(r["already_started"] for r in refs)

    second = cli("start", "--kind", "Counter", "--from-file", "-", "--json", stdin=path.read_text())
    assert second.returncode == 0, second.stderr
    assert all(json.loads(line)["already_started"] for line in second.stdout.splitlines())
    summary = SUMMARY.search(second.stderr)
    assert summary is not None and summary["started"] == "0" and summary["existing"] == "20"
    assert "from stdin" in second.stderr


def test_a_bulk_start_on_a_terminal_shows_progress(stack: Stack, tmp_path: Path, txid: str) -> None:
    ids = [f"{txid}-{i:04d}" for i in range(1000)]
    path = write_ids(tmp_path / "ids.txt", ids)
    code, out, terminal = run_on_a_terminal(stack, "start", "--kind", "Counter", "--from-file", str(path))
    assert code == 0, terminal
    assert out == ""
    assert CANARY not in terminal
    plain = ANSI.sub("", terminal)
    updates = [part for part in plain.split("\r") if "/1000" in part]
    assert updates, f"no progress updates on the terminal: {terminal!r}"
    assert len(updates) > 1, "the bar moves while the IDs are started"
    assert "1000/1000 100%" in updates[-1] and updates[-1].rstrip().endswith("/s")
    assert all(re.match(r"\s*[━╸╺]{30} ", u) for u in updates), f"rich's bar comes first: {updates}"
    summary = SUMMARY.search(plain)
    assert summary is not None and summary["started"] == "1000" and summary["invalid"] == "0"
