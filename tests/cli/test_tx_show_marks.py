"""`tx show` reads unistatus's own marks of a history row, never a caller's metadata key
of the same name: a caller's ``flag`` is the caller's, not unistatus flagging the change.
A row marked in the old shape (the marks at the top of the metadata, before they moved
under the reserved key) still reads as marked."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import Database
from unistatus import DualWriteAdapter
from unistatus.cli import app
from unistatus.db.tables import status_history
from unistatus.domain.marks import flag_of
from unistatus.errors import InputError

runner = CliRunner()


def show(db: Database, ref: str, *extra: str) -> str:
    out = runner.invoke(
        app, ["--database-url", db.url, "tx", "show", ref, *extra], env={"COLUMNS": "250"}
    )
    assert out.exit_code == 0, out.output
    return out.stdout


def dual(db: Database) -> None:
    """A mode that writes unified rows and their history."""
    out = runner.invoke(
        app,
        ["--database-url", db.url, "mode", "set", "DUAL_WRITE_UNIFIED_PRIMARY", "--reason", "t"],
    )
    assert out.exit_code == 0, out.output


def test_a_callers_flag_is_not_shown_as_unistatuss(db: Database) -> None:
    dual(db)
    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        made = adapter.create_transaction("WALLET_CASHOUT", 42, "5", "USD")
        ref = f"cashout:{made.legacy_entity_id}"
        changed = adapter.update_status(
            ref, "PROCESSING", "sent", "app", metadata={"flag": "legacy_refused"}
        )
    assert changed.overall_success and not changed.has_inconsistency
    last, _ = json.loads(show(db, ref, "--json"))["history"]
    assert last["flag"] is None, last
    text = " ".join(show(db, ref).split())
    assert "refused" not in text and "[legacy_refused]" not in text, text


def test_a_row_marked_in_the_old_shape_still_reads_as_marked(db: Database) -> None:
    dual(db)
    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        made = adapter.create_transaction("WALLET_CASHOUT", 42, "5", "USD")
        ref = f"cashout:{made.legacy_entity_id}"
        assert adapter.update_status(ref, "PROCESSING", "sent", "app").overall_success
    old = {"flag": "legacy_refused", "legacy_error": "t_refuse", "repair_queued": True}
    h = status_history
    with db.engine.begin() as conn:
        newest = conn.execute(sa.select(sa.func.max(h.c.id))).scalar_one()
        conn.execute(sa.update(h).where(h.c.id == newest).values(meta=old))
    last, first = json.loads(show(db, ref, "--json"))["history"]
    assert (last["flag"], first["flag"]) == ("legacy_refused", None), last
    assert "refused (queued for repair)" in " ".join(show(db, ref).split())


IMITATIONS = [
    {"capture": "bypass", "flag": "legacy_refused"},
    {"capture": "catch_up", "flag": "legacy_refused", "writer": "x", "client_addr": None},
    {"flag": "legacy_refused", "legacy_error": "t", "repair_queued": True},
]


@pytest.mark.parametrize("forged", IMITATIONS)
def test_a_callers_imitation_of_unistatuss_marks_is_refused(db: Database, forged: dict) -> None:
    """A caller's metadata shaped like a capture row's (top-level ``capture`` and
    ``flag``) or like the old marks' triple read as unistatus flagging the change: `tx
    show` said legacy never got it (a review). Refused before anything is written."""
    dual(db)
    with DualWriteAdapter(db.engine, settings=db.settings) as adapter:
        made = adapter.create_transaction("WALLET_CASHOUT", 42, "5", "USD")
        ref = f"cashout:{made.legacy_entity_id}"
        with pytest.raises(InputError, match="metadata"):
            adapter.update_status(ref, "PROCESSING", "sent", "app", metadata=dict(forged))
        with pytest.raises(InputError, match="metadata"):
            adapter.create_transaction("WALLET_CASHOUT", 43, "5", "USD", metadata=dict(forged))
    assert [r["flag"] for r in json.loads(show(db, ref, "--json"))["history"]] == [None]


def test_a_callers_capture_key_of_its_own_is_kept() -> None:
    """Only the capture's own values are refused: a caller's other ``capture`` is its
    own, and the capture's real rows (written by SQL, never through the adapter) still
    read as flagged."""
    from unistatus.domain.inputs import check_metadata

    assert check_metadata({"capture": "photo", "flag": "x"}) == {"capture": "photo", "flag": "x"}
    assert flag_of({"capture": "bypass", "writer": "w", "flag": "legacy_refused"}) == (
        "legacy_refused"
    )
