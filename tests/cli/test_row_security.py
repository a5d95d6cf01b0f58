"""Row-level security on a table unistatus reads, for a role that does not bypass it:
the commands whose answer counts rows refuse at their start, naming the table and what to
do, instead of reporting 100% on the rows the policy lets them see (found by an
exploratory tester: backfill "10 of 10 complete", check "50 of 50 consistent", gates
100%, an archive of half the rows that verified, on a table of 20 exchanges)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from support.check_data import populate
from unistatus.cli import app

pytestmark = pytest.mark.postgres


@pytest.fixture
def hidden_rows(scratch_pg: Any) -> Iterator[tuple[Any, str]]:
    """``exchanges`` under a policy that shows half its rows, and the URL of a role of
    the test's own that has every grant but does not bypass the policy."""
    role = f"fsch_rls_{uuid.uuid4().hex[:8]}"
    populate(scratch_pg.engine, scratch_pg.settings, 20)
    with scratch_pg.engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
        conn.exec_driver_sql("ALTER TABLE exchanges ENABLE ROW LEVEL SECURITY")
        conn.exec_driver_sql("CREATE POLICY tenant ON exchanges USING (id %% 2 = 0)")
        for what in ("TABLES", "SEQUENCES", "FUNCTIONS"):
            verb = "EXECUTE" if what == "FUNCTIONS" else "ALL"
            conn.exec_driver_sql(f'GRANT {verb} ON ALL {what} IN SCHEMA public TO "{role}"')
        conn.exec_driver_sql(f'GRANT ALL ON SCHEMA public TO "{role}"')
    url = sa.engine.make_url(scratch_pg.url).set(username=role)
    try:
        yield scratch_pg, url.render_as_string(hide_password=False)
    finally:
        scratch_pg.engine.dispose()
        with scratch_pg.engine.begin() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
        admin = sa.create_engine(sa.engine.make_url(scratch_pg.url).set(database="postgres"))
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        admin.dispose()


@pytest.mark.parametrize(
    "command",
    [
        ["backfill"],
        ["check"],
        ["phase", "advance", "--reason", "t"],
        ["archive", "export", "--out", "ARCHIVE"],
        ["retire", "legacy-columns", "--reason", "t"],
    ],
    ids=lambda v: " ".join(v[:2]),
)
def test_a_command_that_counts_rows_refuses_a_table_whose_rows_a_policy_hides(
    hidden_rows: tuple[Any, str], command: list[str], tmp_path: Path
) -> None:
    _, url = hidden_rows
    command = [str(tmp_path / "a") if part == "ARCHIVE" else part for part in command]
    result = CliRunner().invoke(app, ["--database-url", url, *command])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert "exchanges" in text and "row-level security" in text, text
    assert "BYPASSRLS" in text and "owner" in text, text


def test_archive_verify_refuses_too(hidden_rows: tuple[Any, str], tmp_path: Path) -> None:
    db, url = hidden_rows
    out = tmp_path / "a"
    made = CliRunner().invoke(
        app, ["--database-url", db.url, "archive", "export", "--out", str(out)]
    )
    assert made.exit_code == 0, made.output
    result = CliRunner().invoke(app, ["--database-url", url, "archive", "verify", str(out)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert "exchanges" in text and "row-level security" in text, text


def test_the_owner_and_a_role_that_bypasses_are_not_refused(
    hidden_rows: tuple[Any, str],
) -> None:
    db, url = hidden_rows
    role = sa.engine.make_url(url).username
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f'ALTER ROLE "{role}" BYPASSRLS')
    result = CliRunner().invoke(app, ["--database-url", url, "check"])
    assert "row-level security" not in result.output, result.output
    assert CliRunner().invoke(app, ["--database-url", db.url, "check"]).exit_code == 0


def test_the_adapter_warns_at_its_start(
    hidden_rows: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    from unistatus import DualWriteAdapter

    _, url = hidden_rows
    adapter = DualWriteAdapter(url, record_stats=False)
    adapter.close()
    assert any(
        "exchanges" in r.getMessage() and "row-level security" in r.getMessage()
        for r in caplog.records
    ), caplog.text


@pytest.mark.parametrize("to", ["role", "public", "group"])
def test_a_policy_that_shows_the_role_every_row_is_not_refused(
    hidden_rows: tuple[Any, str], to: str
) -> None:
    """A permissive policy for SELECT (or ALL) whose USING is ``true``, for the role, for
    PUBLIC or for a role it is a member of, hides nothing (the policies are OR'ed):
    granting BYPASSRLS needs a superuser, so this is an operator's way out."""
    db, url = hidden_rows
    role = sa.engine.make_url(url).username
    group = f"fknd_rls_group_{uuid.uuid4().hex[:8]}"
    target = {"role": f'"{role}"', "public": "PUBLIC", "group": f'"{group}"'}[to]
    try:
        with db.engine.begin() as conn:
            if to == "group":
                conn.exec_driver_sql(f'CREATE ROLE "{group}"')
                conn.exec_driver_sql(f'GRANT "{group}" TO "{role}"')
            conn.exec_driver_sql(f"CREATE POLICY everyone ON exchanges TO {target} USING (true)")
        result = CliRunner().invoke(app, ["--database-url", url, "check"])
        assert "row-level security" not in result.output, result.output
        with db.engine.begin() as conn:  # a restrictive policy hides rows again
            conn.exec_driver_sql(
                f"CREATE POLICY narrow ON exchanges AS RESTRICTIVE TO {target} USING (id > 3)"
            )
        result = CliRunner().invoke(app, ["--database-url", url, "check"])
        assert result.exit_code == 2 and "row-level security" in result.output, result.output
    finally:
        if to == "group":
            with db.engine.begin() as conn:
                conn.exec_driver_sql("DROP POLICY IF EXISTS everyone ON exchanges")
                conn.exec_driver_sql("DROP POLICY IF EXISTS narrow ON exchanges")
                conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{group}"')


def test_a_policy_for_another_role_or_with_a_condition_is_still_refused(
    hidden_rows: tuple[Any, str],
) -> None:
    db, url = hidden_rows
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE POLICY others ON exchanges TO pg_monitor USING (true)")
        conn.exec_driver_sql("CREATE POLICY inserts ON exchanges FOR INSERT WITH CHECK (true)")
    result = CliRunner().invoke(app, ["--database-url", url, "check"])
    assert result.exit_code == 2 and "row-level security" in result.output, result.output


@pytest.mark.parametrize("only", ["for_select", "noinherit_group"])
def test_a_policy_that_leaves_locking_reads_or_writes_hidden_is_still_refused(
    hidden_rows: tuple[Any, str], only: str
) -> None:
    """A reviewer: a ``FOR SELECT ... USING (true)`` policy (the runbook's own example)
    was accepted, but ``SELECT ... FOR UPDATE`` / ``FOR SHARE`` (the adapter's locked
    reads, the check's re-read, the backfill's claims) and UPDATE and DELETE need an
    UPDATE / DELETE policy too, and still saw nothing. A policy for a group the role
    joined NOINHERIT does not apply to it at all."""
    db, url = hidden_rows
    role = sa.engine.make_url(url).username
    group = f"fknd_rls_noinherit_{uuid.uuid4().hex[:8]}"
    try:
        with db.engine.begin() as conn:
            if only == "for_select":
                conn.exec_driver_sql(
                    f'CREATE POLICY reads ON exchanges FOR SELECT TO "{role}" USING (true)'
                )
            else:
                conn.exec_driver_sql(f'CREATE ROLE "{group}"')
                conn.exec_driver_sql(f'ALTER ROLE "{role}" NOINHERIT')
                conn.exec_driver_sql(f'GRANT "{group}" TO "{role}"')
                conn.exec_driver_sql(
                    f'CREATE POLICY everyone ON exchanges TO "{group}" USING (true)'
                )
        result = CliRunner().invoke(app, ["--database-url", url, "check"])
        assert result.exit_code == 2 and "row-level security" in result.output, result.output
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP POLICY IF EXISTS reads ON exchanges")
            conn.exec_driver_sql("DROP POLICY IF EXISTS everyone ON exchanges")
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{group}"')


def test_the_check_can_be_turned_off_by_an_operator(hidden_rows: tuple[Any, str]) -> None:
    """``row_security_check = false``: an operator who verified the role sees every row
    (a policy the catalog query cannot judge) is not refused."""
    _, url = hidden_rows
    env = {"UNISTATUS_ROW_SECURITY_CHECK": "false"}
    result = CliRunner().invoke(app, ["--database-url", url, "check"], env=env)
    assert "row-level security" not in result.output, result.output


def test_phase_advance_with_force_is_not_refused(hidden_rows: tuple[Any, str]) -> None:
    """--force overrides the gates, whose counts the policy would skew: nothing to refuse."""
    _, url = hidden_rows
    command = ["phase", "advance", "--force", "--reason", "drill"]
    result = CliRunner().invoke(app, ["--database-url", url, *command])
    assert "row-level security" not in result.output, result.output
