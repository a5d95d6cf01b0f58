"""Text any writer stored, shown by the CLI as text: never as Rich markup, never as the
terminal's orders (found by a probe: a legacy status '[/]' stopped `check` with exit 2
after its report was stored, '[ok]' was shown as '', an escape sequence in a currency
rewrote the line and a '[link=...]' became a live hyperlink)."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import Database
from unistatus.cli import app
from unistatus.observe.notify import Notification, Notifier
from unistatus.shown import as_markup, as_text

HOSTILE = ["[/]", "[ok]", "[bold red]Q[/][link=file:///etc/passwd]x[/link]"]


def test_check_shows_stored_values_as_they_are(db: Database) -> None:
    with db.engine.begin() as conn:
        for i, status in enumerate(HOSTILE, start=1):
            conn.execute(
                sa.text(
                    "INSERT INTO escrows (id, user_id, amount, currency, status, created_at, "
                    "updated_at) VALUES (:i, 9, 1, :c, :s, :t, :t)"
                ),
                {"i": i, "c": "\x1b[2J[b]" if i == 1 else "USD", "s": status, "t": "2026-01-01"},
            )
    out = CliRunner().invoke(app, ["--database-url", db.url, "check", "--examples", "10"])
    assert out.exit_code == 1, out.output  # a check that found a problem, not a crash
    flat = " ".join(out.stdout.split())
    for status in HOSTILE:
        assert repr(status) in flat, flat
    assert "\x1b" not in out.stdout


def test_text_is_escaped_for_the_terminal_and_for_markup() -> None:
    hostile = "a\x1b]52;c;cHduZWQ=\x07b\nc\rd\u202ee\u2066f\x9bg\th"
    shown = as_text(hostile)
    assert shown == "a\\x1b]52;c;cHduZWQ=\\x07b\\nc\\rd\\u202ee\\u2066f\\x9bg\th"
    assert shown.isprintable() or "\t" in shown
    assert as_markup("[/]x") == "\\[/]x"


def test_a_notification_is_one_log_line_and_no_chat_markup(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A writer named '<!channel> <https://evil.example|click here>' pinged the channel
    and showed a disguised link in Slack; a newline in a role's name forged a log line."""
    caplog.set_level(logging.INFO, logger="unistatus")
    note = Notification(
        name="bypass_writes_unified_only",
        level="warning",
        state="firing",
        message="bypass:<!channel> <https://evil.example|click here> & co\nFAKE line/pg",
    )
    Notifier().send(note)
    text = note.payload()["text"]
    assert "<" not in text and ">" not in text, text
    assert "&lt;!channel&gt; &lt;https://evil.example|click here&gt; &amp; co" in text
    assert note.payload()["message"] == note.message  # the raw value, for machines
    (record,) = [r for r in caplog.records if "bypass_writes_unified_only" in r.getMessage()]
    assert "\n" not in record.getMessage(), record.getMessage()
