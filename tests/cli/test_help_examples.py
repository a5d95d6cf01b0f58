"""Every example in `--help` is a whole command at any terminal width.

Rich wrapped the examples at the terminal's width with no continuation mark: at 80
columns `tx create --help` showed `... --currency USD` and, on the next line,
`--idempotency-key order-1042`; copying the first line dropped the key (a duplicate
cashout on a retry). An example line is printed as written, however narrow the terminal
(exploratory review, automating unistatus from shell scripts). A long example may still
be written over several lines ending in ``\\``, the shell's own continuation.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from unistatus.cli import app

runner = CliRunner()
# An example starts with the program, maybe after environment assignments.
_COMMAND = re.compile(r"^(?:[A-Z_]+=\S*\s+)*unistatus\s")
# The shell lets a command go on at the next line after these.
_GOES_ON = ("\\", "&&", "||", "|")


def _commands() -> Iterator[tuple[list[str], Any]]:
    def walk(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        yield path, command
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            if not getattr(sub, "hidden", False):
                yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


def _options_taking_a_value() -> set[str]:
    names: set[str] = set()
    for _, command in _commands():
        for param in command.params:
            if param.param_type_name == "option" and not param.is_flag:
                names.update(param.opts)
    return names


PATHS = [path for path, _ in _commands()]
TAKES_A_VALUE = _options_taking_a_value()


def _examples_block(path: list[str], columns: int) -> list[str]:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    _, heading, after = result.stdout.partition("Examples:")
    assert heading, result.stdout
    # The block ends where the first panel (options, commands) begins.
    return [line.rstrip() for line in after.split("╭")[0].splitlines()]


def _examples(lines: list[str]) -> tuple[list[str], list[str]]:
    """The block's commands (continued lines joined) and its fragments: lines that start
    with an option although the line above does not go on."""
    commands: list[str] = []
    fragments: list[str] = []
    going_on = False
    for line in lines:
        text = line.strip()
        if going_on and commands:
            commands[-1] += " " + text
        elif _COMMAND.match(text):
            commands.append(text)
        elif text.startswith("-"):
            fragments.append(text)
        going_on = text.endswith(_GOES_ON)
    return commands, fragments


def _incomplete(command: str) -> str | None:
    """Why ``command`` is not a whole command, or None."""
    try:
        words = shlex.split(command.replace("\\ ", " "))
    except ValueError as exc:  # an unbalanced quote: the rest is on another line
        return str(exc)
    # Each command of a pipeline or list ends where the next begins.
    ends = [i - 1 for i, word in enumerate(words) if word in ("|", "||", "&&", ";")]
    ends.append(len(words) - 1)
    for end in ends:
        last = words[end].rstrip(";")
        if last in TAKES_A_VALUE:
            return f"ends with {last}, which takes a value"
    return None


@pytest.mark.parametrize("columns", [40, 80])
def test_every_example_line_is_a_whole_command_at_any_width(columns: int) -> None:
    broken = []
    for path in PATHS:
        name = " ".join(["unistatus", *path])
        wide, _ = _examples(_examples_block(path, 400))
        commands, fragments = _examples(_examples_block(path, columns))
        broken += [f"{name}: fragment line {f!r}" for f in fragments]
        for command in commands:
            why = _incomplete(command)
            if why:
                broken.append(f"{name}: {command!r} {why}")
            elif command not in wide:
                broken.append(f"{name}: {command!r} is not an example as written")
        if len(commands) != len(wide):
            broken.append(
                f"{name}: {len(commands)} examples at {columns} columns, {len(wide)} wide"
            )
    assert broken == [], "\n".join(broken)


def test_the_check_finds_what_a_wrap_breaks() -> None:
    """The test's own reading of a block: a wrapped example is caught three ways."""
    commands, fragments = _examples(
        [
            "   unistatus tx create --type cashout --user 42 --amount 150.00 --currency USD",
            " --idempotency-key order-1042",
            "   unistatus archive restore /backups/x --database-url",
            " postgresql://user@restore-host/scratch",
            '   unistatus backfill pause --reason "peak',
            ' hours"',
            "   unistatus repair --from m.jsonl \\",
            "     --reason INC-42",
        ]
    )
    assert fragments == ["--idempotency-key order-1042"]
    assert _incomplete(commands[1]) == "ends with --database-url, which takes a value"
    assert _incomplete(commands[2]) is not None
    assert _incomplete(commands[3]) is None


def _help(*path: str) -> str:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout.partition("Examples:")[2].split("╭")[0]


def test_mode_set_examples_do_not_jump_phases_past_the_gates() -> None:
    """`mode set UNIFIED_ONLY --system cashout` took cashouts from phase 2's mode to the
    last one, gates unmeasured and without --force. The gated way is `phase advance`; a
    `mode set` example goes one mode on and says it bypasses the gates, or is forced."""
    text = _help("mode", "set")
    assert "unistatus phase advance --system cashout" in text
    for line in text.splitlines():
        if "mode set UNIFIED_ONLY" in line:
            assert "--force" in line, line
    assert "bypassing the gates" in text


def test_tx_update_example_says_it_needs_a_transaction_in_progress() -> None:
    """`tx update cashout:1 OTP_PENDING` fails on the tool's own demo data (cashout:1 is
    SUCCESS after `init --demo-data`): the example says which transaction it needs."""
    lines = [line.strip() for line in _help("tx", "update").splitlines() if line.strip()]
    example = next(i for i, line in enumerate(lines) if "OTP_PENDING" in line)
    note = " ".join(lines[:example])
    assert "in progress" in note and "cashout:1" in note, lines
