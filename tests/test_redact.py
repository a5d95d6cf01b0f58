"""Database passwords never show (issue 10, section 8).

Each form libpq accepts (URL userinfo, ``password=`` and ``sslpassword=`` query
parameters, key=value strings) and a malformed URL is fed to each output: ``diagnose``,
the archive manifest, the log, error messages (library and CLI) and ``/api/v1/status``;
the secret must appear in none of them.
"""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import Database
from unistatus.cli import app as cli_app
from unistatus.cli.context import _default
from unistatus.config import load_settings
from unistatus.db.engine import create_engine
from unistatus.errors import ConfigError

SECRET = "Sekr3t-pw"


def _with_secret(url: str, form: str) -> str:
    """The test database's URL carrying SECRET in one libpq form (trust ignores it)."""
    u = sa.engine.make_url(url)
    host, port, db, user = u.host, u.port or 5432, u.database, u.username
    return {
        "userinfo": f"postgresql://{user}:{SECRET}@{host}:{port}/{db}",
        "password param": f"postgresql://{user}@{host}:{port}/{db}?password={SECRET}",
        "sslpassword param": f"postgresql://{user}@{host}:{port}/{db}?sslpassword={SECRET}",
        "both params": f"postgresql://{user}@{host}:{port}/{db}?sslmode=prefer&password={SECRET}"
        f"&sslpassword={SECRET}",
        "key=value": f"host={host} port={port} user={user} password={SECRET} dbname={db}",
        "key=value quoted": f"host={host} password = '{SECRET} x' dbname={db}",
        "malformed": f"postgresql//{user}:{SECRET}@{host}:{port}/{db}",
        "malformed query": f"postgresql:/{host}/{db}?password={SECRET}",
        # A space in the password, percent-encoded or not: libpq takes both, and
        # SQLAlchemy renders it unencoded, where a search up to the next space stopped.
        "userinfo space": f"postgresql://{user}:pw%20{SECRET}@{host}:{port}/{db}",
        "userinfo raw space": f"postgresql://{user}:pw {SECRET}@{host}:{port}/{db}",
        "malformed space": f"postgresql:/{user}:pw {SECRET}@{host}:{port}/{db}",
        # An "@" or ":" of the password not encoded: SQLAlchemy took the password's tail
        # for the host (or the port) and every connection error showed it.
        "raw at": f"postgresql://{user}:p@{SECRET}@{host}:{port}/{db}",
        "raw at and colon": f"postgresql://{user}:p@{SECRET}:x{SECRET}@{host}:{port}/{db}",
    }[form]


CONNECTABLE = [
    "userinfo",
    "password param",
    "sslpassword param",
    "both params",
    "userinfo space",
    "userinfo raw space",
]
UNPARSABLE = [
    "key=value",
    "key=value quoted",
    "malformed",
    "malformed query",
    "malformed space",
    "raw at",
    "raw at and colon",
]


def assert_no_secret(text: str) -> None:
    assert SECRET not in text, text


@pytest.mark.parametrize("form", CONNECTABLE)
def test_diagnose_and_the_manifest_hide_the_password(
    pg: Database, tmp_path: Path, form: str
) -> None:
    from unistatus.migration.archive import export_archive
    from unistatus.observe.diagnose import generate_diagnostic

    url = _with_secret(pg.url, form)
    engine = create_engine(url)
    try:
        app_settings = load_settings(database_url=url)
        doc = generate_diagnostic(engine, app_settings)
        assert doc["versions"]["database"] == "postgresql", doc["versions"]
        assert_no_secret(json.dumps(doc, default=_default))
        export_archive(engine, app_settings, tmp_path / "archive")
        manifest = (tmp_path / "archive" / "manifest.json").read_text()
        assert_no_secret(manifest)
        assert "***" in json.loads(manifest)["source"]["database"]
    finally:
        engine.dispose()


@pytest.mark.parametrize("form", CONNECTABLE + UNPARSABLE)
def test_the_cli_never_prints_the_password(pg: Database, tmp_path: Path, form: str) -> None:
    url = _with_secret(pg.url, form)
    runner = CliRunner()
    for args in (["diagnose", "--out", "-"], ["mode", "get"], ["archive", "export", "--out", str(tmp_path / form)]):  # fmt: skip
        result = runner.invoke(cli_app, ["--database-url", url, *args], catch_exceptions=False)
        assert_no_secret(result.output)
        assert_no_secret(result.stderr)
        if form in UNPARSABLE:
            assert result.exit_code == 2 and "invalid database URL" in result.stderr
    if form in CONNECTABLE:
        assert_no_secret((tmp_path / form / "manifest.json").read_text())


@pytest.mark.parametrize("form", UNPARSABLE)
def test_error_messages_hide_the_password(form: str) -> None:
    url = _with_secret("postgresql://postgres@127.0.0.1:5432/x", form)
    with pytest.raises(ConfigError) as info:
        create_engine(url)
    assert_no_secret(str(info.value))
    assert "***" in str(info.value)


@pytest.mark.parametrize("form", CONNECTABLE + UNPARSABLE)
def test_the_log_hides_the_password(form: str) -> None:
    from unistatus.redact import log_redacted

    url = _with_secret("postgresql://postgres@127.0.0.1:5432/x", form)
    stream = io.StringIO()
    handler = log_redacted(stream, logging.INFO)
    try:
        log = logging.getLogger("unistatus.test_redact")
        log.warning("connecting to %s", url)
        try:
            raise RuntimeError(f"could not connect with {url}")
        except RuntimeError:
            log.exception("failed")
    finally:
        logging.getLogger("unistatus").removeHandler(handler)
    text = stream.getvalue()
    assert "connecting to" in text and "RuntimeError" in text
    assert_no_secret(text)


@pytest.mark.parametrize("form", CONNECTABLE)
def test_the_status_endpoint_hides_the_password(pg: Database, form: str) -> None:
    from unistatus.api.service import create_app

    url = _with_secret(pg.url, form)
    down = re.sub(r":(\d+)/", ":1/", url, count=1)
    for target in (url, down):
        engine = create_engine(target)
        try:
            app = create_app(load_settings(database_url=target), engine)
            with TestClient(app) as client:
                for path in ("/api/v1/status", "/health"):
                    assert_no_secret(client.get(path).text)
        finally:
            engine.dispose()


# --- the function itself ------------------------------------------------------------------

_PW = st.text(
    alphabet=st.characters(codec="ascii", categories=["L", "N", "P", "S"]), min_size=1, max_size=20
).map(lambda s: "Zq" + s + "9Z")


@settings(max_examples=300, deadline=None)
@given(password=_PW, user=st.from_regex(r"[a-z]{1,8}", fullmatch=True), where=st.integers(0, 2))
def test_redact_hides_any_userinfo_password(password: str, user: str, where: int) -> None:
    from unistatus.redact import redact

    url = f"postgresql://{user}:{password}@db.internal:5432/payments"
    text = [url, f"invalid database URL {url!r}: nope", f"malformed {url.replace('://', '//')}"]
    out = redact(text[where])
    assert password not in out, out
    assert "db.internal" in out


@settings(max_examples=300, deadline=None)
@given(
    # A "/" before its first space would read as a URL's path ("//db:5432/app; ...").
    password=_PW,
    spaces=st.lists(st.integers(0, 22), min_size=1, max_size=3),
)
def test_redact_hides_a_userinfo_password_with_spaces(password: str, spaces: list[int]) -> None:
    from hypothesis import assume

    from unistatus.redact import redact

    for at in sorted(spaces, reverse=True):
        password = password[:at] + " " + password[at:]
    assume("/" not in password.split(" ")[0])
    url = f"postgresql://u:{password}@db.internal:5432/payments"
    for text in (url, f"invalid database URL {url!r}: nope", url.replace("://", ":/")):
        out = redact(text)
        assert all(part not in out for part in password.split(" ") if len(part) > 2), out
        assert "db.internal" in out


@pytest.mark.parametrize(
    "line",
    [
        "phase:2:advance by alice@example.com",
        # A URL without a password, then an address: its path is no password (the
        # first version took everything to the line's last "@": a review).
        "connected to postgresql://db:5432/app; user alice@corp",
    ],
)
def test_redact_keeps_text_that_holds_no_password(line: str) -> None:
    """Only a URL's userinfo runs across spaces: a log line's "word:x:" does not."""
    from unistatus.redact import redact

    assert redact(line) == line


@settings(max_examples=300, deadline=None)
@given(password=_PW.filter(lambda p: "&" not in p and "#" not in p), key=st.sampled_from(["password", "sslpassword", "PassWord"]))  # fmt: skip
def test_redact_hides_any_query_password(password: str, key: str) -> None:
    from unistatus.redact import redact

    out = redact(f"postgresql://u@h/db?sslmode=require&{key}={password}&application_name=x")
    assert password not in out and "application_name=x" in out


@settings(max_examples=300, deadline=None)
@given(password=_PW, quoted=st.booleans())  # _PW never starts with a quote, as libpq wants
def test_redact_hides_any_key_value_password(password: str, quoted: bool) -> None:
    from unistatus.redact import redact

    value = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + " x'" if quoted else password
    out = redact(f"host=h password={value} dbname=d")
    assert password not in out and out.endswith("dbname=d")


def test_the_log_goes_above_the_progress_bars_while_they_are_drawn() -> None:
    """The CLI's log handler (stderr) kept the stream of the moment it was made: a
    warning while the backfill's bars were drawn (its role cannot see other roles'
    sessions, say) was written in the middle of them, and the next refresh drew the
    bars over it. It now writes to the stream Rich's live display redirects, which
    prints it above the bars."""
    from rich.console import Console
    from rich.progress import Progress

    from unistatus.redact import log_redacted

    handler = log_redacted()
    screen = io.StringIO()
    try:
        with Progress(console=Console(file=screen, force_terminal=True, width=80)) as bars:
            bars.add_task("cashout", total=10)
            logging.getLogger("unistatus.test_redact").warning("a warning mid-backfill")
    finally:
        logging.getLogger("unistatus").removeHandler(handler)
    assert "a warning mid-backfill" in screen.getvalue()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("postgresql://app:pw@db.internal:54x2/payments", "its port is not a number"),
        (f"postgresql://app:p@{SECRET}@db.internal/payments", "more than one '@' before the host"),
    ],
)
def test_a_malformed_url_says_why(url: str, why: str) -> None:
    """Its reason was redacted away with the password (a review)."""
    with pytest.raises(ConfigError) as info:
        create_engine(url)
    assert why in str(info.value) and SECRET not in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "password", ["pass word/xyz", "pass@word xyz", "my@pass word", "abc def@ghi jkl/mno"], ids=repr
)
def test_redact_hides_a_password_with_a_space_and_a_slash_or_an_at_sign(password: str) -> None:
    """The second version showed these (a second review): the space-crossing part
    refused every "/" and "@"."""
    from unistatus.redact import redact

    for text in (
        f"postgresql://u:{password}@db.example/app",
        f"error: invalid database URL 'postgresql://u:{password}@db.example/app': why",
    ):
        out = redact(text)
        parts = password.replace("@", " ").replace("/", " ").split()
        assert all(part not in out for part in parts), out
        assert "db.example" in out
