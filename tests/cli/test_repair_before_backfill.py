"""`repair` of a system whose backfill has not completed: every row the backfill has not
copied is `missing_unified`, repaired one at a time with a history row each, neither
set-based nor throttled (a hurried operator's repair in phase 2 wrote 139,279 of them in
ten minutes at 80% of a core; found by a probe). It says so as it meets the first such
row, and in its report, pointing at `unistatus backfill`; nothing is said where every
unified row was written by the adapter (no backfill needed)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from support.slow_statement import start
from unistatus.backfill import run_backfill
from unistatus.db.control import set_mode
from unistatus.domain.statuses import DualWriteMode
from unistatus.sim.seed import seed_legacy

WARNING = "the backfill of cashout has not completed"


def _repair(db: Any) -> subprocess.CompletedProcess[str]:
    """The command as a process (its log on stderr, as an operator sees it)."""
    args = ["repair", "--strategy", "legacy_wins", "--reason", "x", "--json", "--limit", "5"]
    proc = start(db.url, *args)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_repair_before_the_backfill_says_so_first(db: Any) -> None:
    seed_legacy(db.engine, db.settings, 60, seed=1)
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="test")
    done = _repair(db)
    said = " ".join(done.stderr.split())
    assert WARNING in said and "unistatus backfill" in said, said
    report = json.loads(done.stdout)
    assert any(WARNING in w for w in report["warnings"]), report["warnings"]

    run_backfill(db.engine, db.settings)
    again = _repair(db)
    assert "has not completed" not in again.stderr, again.stderr
    assert not any("backfill" in w for w in json.loads(again.stdout)["warnings"])
