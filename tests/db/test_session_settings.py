"""unistatus's own PostgreSQL connections whatever session defaults the server gives
the role or the database (``ALTER ROLE/DATABASE ... SET``): psycopg 3 encodes text in
the connection's ``client_encoding`` and parses timestamps only in ISO ``DateStyle``,
so a role set to LATIN1 or a database set to German dates broke writes and reads.

The defaults are given here as the startup ``options`` a role's settings amount to.
"""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from conftest import Database
from support.cli_run import cli
from unistatus.adapter.core import DualWriteAdapter
from unistatus.db.control import set_mode
from unistatus.db.engine import create_engine
from unistatus.domain.statuses import DualWriteMode as M
from unistatus.errors import SessionSettingsError, StorageError

pytestmark = pytest.mark.postgres

LATIN1_GERMAN = "-c client_encoding=LATIN1 -c DateStyle=German,DMY"


def with_defaults(url: str, options: str = LATIN1_GERMAN) -> str:
    """``url`` whose sessions start with ``options`` as their defaults."""
    return f"{url}{'&' if '?' in url else '?'}options={quote(options)}"


def test_own_connections_are_utf8_and_iso_whatever_the_session_defaults(pg: Database) -> None:
    engine = create_engine(with_defaults(pg.url))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW client_encoding").scalar_one() == "UTF8"
            assert conn.exec_driver_sql("SHOW DateStyle").scalar_one().startswith("ISO")
            assert conn.exec_driver_sql("SELECT now()").scalar_one() is not None
    finally:
        engine.dispose()


def test_an_adapter_writes_and_reads_any_text_under_latin1_and_german_dates(
    pg: Database,
) -> None:
    set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test", force=True)
    with DualWriteAdapter(with_defaults(pg.url), settings=pg.settings) as adapter:
        made = adapter.create_transaction(
            transaction_type="ESCROW",
            user_id=7,
            amount=Decimal("5.00"),
            currency="EUR",
            triggered_by="svc",
        )
        assert made.overall_success, made.error
        changed = adapter.update_status(made.entity_id, "AWAITING_PAYMENT", "paid €5 送金", "svc")
        assert changed.overall_success, changed.error
        status, found = adapter.get_transaction_status(made.entity_id)
        assert status is not None and found["source"]


def test_an_applications_engine_with_unfit_settings_is_named_not_a_database_failure(
    pg: Database,
) -> None:
    """An application's own engine is its own: unistatus does not change its sessions,
    but says which setting it cannot work with, as a ConfigError, never a raw
    UnicodeEncodeError/NotImplementedError nor a failure counted against the database."""
    set_mode(pg.engine, M.DUAL_WRITE_LEGACY_PRIMARY, reason="test", actor="test", force=True)
    with DualWriteAdapter(pg.engine, settings=pg.settings) as ours:
        made = ours.create_transaction(
            transaction_type="ESCROW",
            user_id=7,
            amount=Decimal("5"),
            currency="EUR",
            triggered_by="svc",
        )
    for options, setting, call in [
        (
            "-c client_encoding=LATIN1",
            "client_encoding",
            lambda ad: ad.update_status(made.entity_id, "AWAITING_PAYMENT", "paid €5", "svc"),
        ),
        (
            "-c DateStyle=German,DMY",
            "DateStyle",
            lambda ad: ad.get_transaction_status(made.entity_id),
        ),
    ]:
        theirs = sa.create_engine(with_defaults(pg.url, options))
        try:
            with DualWriteAdapter(theirs, settings=pg.settings) as adapter:
                with pytest.raises(SessionSettingsError, match=setting):
                    call(adapter)
        finally:
            theirs.dispose()


@pytest.mark.parametrize(
    ("options", "said"),
    [("", "lock_timeout"), ("-c statement_timeout=300ms", "statement_timeout")],
)
def test_a_timeout_while_the_adapter_starts_is_not_cannot_reach_the_database(
    pg: Database, options: str, said: str
) -> None:
    """A lock another session holds on a legacy table (or a role's statement_timeout
    under it) cancels the adapter's first reads: the database was reached, and the
    error says what timed out."""
    settings = pg.settings.model_copy(
        update={"lock_timeout_ms": 300 if said == "lock_timeout" else 0}
    )
    url = with_defaults(pg.url, options) if options else pg.url
    holder = pg.engine.connect()
    try:
        holder.exec_driver_sql("LOCK TABLE cashouts IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(StorageError) as raised:
            DualWriteAdapter(url, settings=settings)
    finally:
        holder.rollback()
        holder.close()
    assert "cannot reach the database" not in str(raised.value)
    assert said in str(raised.value)


def test_commands_work_under_latin1_and_german_dates(pg: Database) -> None:
    """The CLI's engines are unistatus's own: its commands read dates and write any
    reason whatever the session defaults (they failed with 'unexpected
    NotImplementedError' / 'unexpected UnicodeEncodeError')."""
    url = with_defaults(pg.url)
    status = cli(url, "phase", "status")
    assert status.exit_code == 0, status.output
    advance = cli(url, "phase", "advance", "--reason", "ñandú-€ 送金", "--force")
    assert advance.exit_code == 0, advance.output
    back = cli(url, "rollback", "--emergency", "--reason", "outage — €10k stuck")
    assert back.exit_code == 0, back.output
    assert cli(url, "phase", "status").exit_code == 0


def test_text_a_latin1_database_cannot_store_is_not_blamed_on_client_encoding(
    pg: Database,
) -> None:
    """unistatus's own connections are UTF8; "€" sent to a LATIN1 database is refused by
    the server (SQLSTATE 22P05). That was named a client_encoding problem ("unistatus
    needs client_encoding UTF8"), which it already had (a reviewer): the error names
    the conversion and the database's encoding."""
    admin = sa.create_engine(sa.engine.make_url(pg.url), isolation_level="AUTOCOMMIT")
    name = f"{pg.engine.url.database}_latin1"
    with admin.connect() as conn:
        conn.exec_driver_sql(
            f"CREATE DATABASE \"{name}\" ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
            "TEMPLATE template0"
        )
    url = sa.engine.make_url(pg.url).set(database=name).render_as_string(hide_password=False)
    try:
        made = cli(url, "init", "--demo-data", "3")
        assert made.exit_code == 0, made.output
        assert cli(url, "phase", "advance", "--reason", "p1").exit_code == 0
        with DualWriteAdapter(
            url, settings=pg.settings.model_copy(update={"database_url": url})
        ) as adapter:
            made = adapter.create_transaction(
                transaction_type="ESCROW",
                user_id=7,
                amount=Decimal("5"),
                currency="EUR",
                triggered_by="svc",
            )
            assert made.overall_success, made.error
            with pytest.raises(SessionSettingsError) as refused:
                adapter.update_status(made.entity_id, "AWAITING_PAYMENT", "paid €5", "svc")
        message = str(refused.value)
        assert "LATIN1" in message and "server_encoding" in message, message
        assert "needs client_encoding UTF8" not in message, message
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_a_timeout_keeps_what_failed_in_front() -> None:
    """A lock or statement timeout is named as one; what failed ("cannot change the
    backfill pause flag") stays in front of it (a reviewer: the timeout replaced it)."""
    import psycopg

    from unistatus.db.failures import storage_errors

    orig = psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")
    with pytest.raises(StorageError) as raised:
        with storage_errors("cannot change the backfill pause flag"):
            raise sa.exc.OperationalError("UPDATE ...", {}, orig)
    message = str(raised.value)
    assert message.startswith("cannot change the backfill pause flag: "), message
    assert "lock_timeout" in message, message
