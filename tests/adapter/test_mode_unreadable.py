"""A write whose system's mode could never be read fails, and says so: the log line and
the result named LEGACY_ONLY (the stand-in a failure is filed under) as if it were the
mode, and an on-call engineer read it as "the migration was rolled back" (exploratory
DBA: a role without grants on unistatus's tables)."""

from __future__ import annotations

import logging

import pytest

from conftest import Database
from support.adapters import adapter_in
from unistatus import DualWriteAdapter, DualWriteMode


def test_a_mode_never_read_is_not_named_as_the_mode(
    sqlite_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    a = adapter_in(sqlite_db, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
    a.close()
    with sqlite_db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE unistatus_control RENAME TO hidden_control")
    try:
        fresh = DualWriteAdapter(sqlite_db.engine, settings=sqlite_db.settings)
        with caplog.at_level(logging.ERROR, logger="unistatus"):
            r = fresh.create_transaction("WALLET_CASHOUT", 1, "10", "USD")
        assert not r.overall_success and "cannot read the mode" in (r.error or "")
        said = " ".join(m for m in caplog.messages if "failed" in m)
        assert "failed in LEGACY_ONLY" not in said, said
        assert "mode not read" in said, said
        fresh.close()
    finally:
        with sqlite_db.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE hidden_control RENAME TO unistatus_control")
