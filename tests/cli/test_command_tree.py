"""The ``tracking`` command tree itself, in-process and without services: help on every command and
option, ``--json`` where data is printed, usage errors, the exit codes and their documentation."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from tracking import cli
from tracking.cli.errors import Failed, translate
from tracking.cli.group import ALIASES, COMMANDS
from tracking.cli.output import print_fields, print_rows
from tracking.exceptions import (
    InvalidTransactionId,
    NotFound,
    RegistryNotMigrated,
    RegistryUnavailable,
    Timeout,
    TrackingError,
)

DOCS = Path(__file__).parents[2] / "docs" / "cli.md"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.cli, list(args), prog_name="tracking")


def words(text: str) -> str:
    """``text`` with its line breaks and runs of spaces as single spaces, as click wraps help."""
    return " ".join(re.sub(r"-\n\s*", "-", text).split())


def options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c.name))
def test_every_command_s_help_names_it_and_says_what_each_option_does(command: click.Command) -> None:
    result = invoke(str(command.name), "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: tracking {command.name} [OPTIONS]")
    assert command.help and words(command.help.split("\n\n")[0]) in words(result.output)
    for option in options(command):
        assert option.help, f"tracking {command.name} {option.opts[0]} has no help text"
        assert option.opts[0] in result.output
        assert words(option.help) in words(result.output), option.opts[0]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c.name))
def test_every_command_prints_json_with_json(command: click.Command) -> None:
    (as_json,) = [option for option in options(command) if option.opts == ["--json"]]
    assert as_json.is_flag and as_json.name == "as_json"


def test_the_group_s_help_lists_every_command_and_the_exit_codes() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    listed = re.findall(r"^  (\w+)  ", result.output.split("Commands:")[1], flags=re.MULTILINE)
    assert listed == [command.name for command in COMMANDS]
    exit_codes = result.output.split("Exit codes:")[1]
    for code, meaning in cli.EXIT_CODES:
        assert re.search(rf"^\s+{code}\s+{re.escape(meaning)}$", exit_codes, flags=re.MULTILINE), code


def test_docs_cli_md_lists_the_same_exit_codes() -> None:
    section = DOCS.read_text().split("## Exit codes")[1].split("\n## ")[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", section, flags=re.MULTILINE)}
    assert documented == {code for code, _meaning in cli.EXIT_CODES}


def test_list_is_another_name_for_ls() -> None:
    assert ALIASES == {"list": "ls"}
    result = invoke("list", "--help")
    assert result.exit_code == 0
    assert result.output.startswith("Usage: tracking list [OPTIONS]")
    assert "--status" in result.output and "--worker" in result.output


def test_version() -> None:
    from tracking import __version__

    result = invoke("--version")
    assert (result.exit_code, result.output) == (0, f"tracking {__version__}\n")


@pytest.mark.parametrize(
    "args",
    [
        ("no-such-command",),
        ("ls", "--status", "sleeping"),
        ("ls", "--limit", "0"),
        ("start", "txn_1", "--jobs", "0"),
        ("start", "txn_1", "--arg", "novalue"),
        ("start",),
        ("start", "txn_1", "--from-file", "ids.txt"),
        ("lookup",),
        ("stop", "txn_1", "--timeout", "soon"),
        ("demo", "--count", "0"),
    ],
    ids=" ".join,
)
def test_usage_errors_exit_with_code_2_and_say_how_to_get_help(
    args: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(list(args)) == cli.EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    assert out == ""
    assert "Usage: tracking" in err and "Try 'tracking" in err and "--help' for help" in err


def test_help_exits_with_0_through_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["lookup", "--help"]) == 0
    assert capsys.readouterr().out.startswith("Usage: tracking lookup [OPTIONS] TRANSACTION_ID")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotFound("no Counter tracker is registered for 'x'"), cli.EXIT_NOT_FOUND),
        (RegistryUnavailable("the registry database is unavailable"), cli.EXIT_UNAVAILABLE),
        (Timeout("did not exit within 0 s"), cli.EXIT_TIMEOUT),
        (RegistryNotMigrated("not migrated: run `tracking migrate`"), cli.EXIT_NOT_MIGRATED),
        (InvalidTransactionId("a transaction ID must not be empty"), cli.EXIT_BAD_INPUT),
        (TrackingError("anything else of tracking's"), cli.EXIT_BAD_INPUT),
        (ValueError("bad input"), cli.EXIT_BAD_INPUT),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_errors_of_tracking_exit_with_their_code(error: Exception, code: int) -> None:
    failed = translate(error)
    assert failed is not None and failed.exit_code == code and failed.message == str(error)


def test_any_other_error_is_left_alone_to_show_its_traceback() -> None:
    assert translate(RuntimeError("a bug")) is None


def test_a_failure_is_printed_with_the_tracking_prefix_and_no_password() -> None:
    stream = io.StringIO()
    Failed("cannot reach postgresql+psycopg://app:s3cret@db:5432/app", cli.EXIT_UNAVAILABLE).show(stream)
    assert stream.getvalue() == "tracking: cannot reach postgresql+psycopg://app:***@db:5432/app\n"


def test_a_table_in_a_pipe_is_plain_aligned_columns_never_cut(capsys: pytest.CaptureFixture[str]) -> None:
    long_id = "txn_" + "f" * 200
    print_rows(
        ("KIND", "TRANSACTION ID", "RESTARTS"),
        [("Counter", long_id, "12"), ("SlowCounter", "txn_2", "0")],
        right=("RESTARTS",),
    )
    lines = capsys.readouterr().out.splitlines()
    assert "\x1b" not in "".join(lines), "no colour codes in a pipe"
    assert [line.split() for line in lines] == [
        ["KIND", "TRANSACTION", "ID", "RESTARTS"],
        ["Counter", long_id, "12"],
        ["SlowCounter", "txn_2", "0"],
    ]
    assert lines[1].endswith(" 12") and lines[2].endswith("  0"), "RESTARTS is aligned right"
    assert all(line == line.rstrip() for line in lines)


def test_fields_in_a_pipe_are_key_value_lines_passwords_masked(capsys: pytest.CaptureFixture[str]) -> None:
    print_fields([("kind", "demo"), ("database", "redis://:pw@broker:6379/0")])
    assert capsys.readouterr().out == "kind             demo\ndatabase         redis://:***@broker:6379/0\n"


def test_a_registry_that_is_not_migrated_exits_5_and_says_to_migrate(
    pg_database: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKING_", "CELERY_"))}
    env.update(TRACKING_DATABASE_URL=pg_database, TRACKING_AUTO_MIGRATE="off")
    result = subprocess.run(
        [sys.executable, "-m", "tracking.cli", "ls"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == cli.EXIT_NOT_MIGRATED, result.stderr
    assert "tracking: not migrated: run `tracking migrate`" in result.stderr
