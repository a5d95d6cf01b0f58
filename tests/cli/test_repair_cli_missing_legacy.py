"""`unistatus repair` on a transaction acknowledged without its legacy row: the command
as an operator runs it (``--dry-run``, a refusal, then the repair; exit codes 0 / 1)."""

from __future__ import annotations

import json

from conftest import Database
from support.adapters import snapshot
from support.cli_run import cli
from support.missing_legacy import MARKED, open_queue, refused_creates
from support.refusing import refusing_inserts


def test_repair_cli_creates_the_missing_legacy_row(db: Database) -> None:
    _, _, (utx,) = refused_creates(db)
    before = snapshot(db)
    dry = cli(db.url, "repair", "--strategy", "unified_wins", "--dry-run")
    assert dry.exit_code == 1, dry.output  # a dry run that would repair: nothing repaired
    said = " ".join(dry.stdout.split())
    assert "would repair 1 entities" in said and "missing_legacy: 1" in said, said
    assert snapshot(db) == before

    with refusing_inserts(db, "cashouts", MARKED) as trigger:
        refused = cli(db.url, "repair", "--strategy", "unified_wins", "--reason", "INC-9")
    assert refused.exit_code == 1, refused.output  # an entity failed
    said = " ".join(refused.stdout.split())
    assert "repaired 0 entities" in said and "failed 1" in said and trigger in said, said
    assert [tuple(q) for q in open_queue(db)] == [(utx, None)]

    done = cli(db.url, "repair", "--strategy", "unified_wins", "--reason", "INC-9", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert (report["repaired"], report["failed"]) == (1, 0)
    assert report["repaired_kinds"] == {"missing_legacy": 1}
    assert report["repair_queue"] == {"seen": 1, "resolved": 1}
    assert open_queue(db) == []
