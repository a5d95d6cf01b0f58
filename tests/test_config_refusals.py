"""What the settings refuse when they load: a ConfigError naming the setting (and, for a
key nobody reads, where it was written and what it may have meant), never defaults
taken in silence nor an error that names pydantic's machinery instead."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unistatus import config
from unistatus.cli import app
from unistatus.config import CONFIG_FILE_ENV, load_settings
from unistatus.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only what a test sets: the suite's own UNISTATUS_* (a server's URL) set aside."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("UNISTATUS_"):
            monkeypatch.delenv(name)
    yield


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "unistatus.toml"
    path.write_text(text)
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    return path


def _refusal(**overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    return str(info.value)


# --- K1: a key nobody reads -------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('shema = "unistatus"\n', "unknown key 'shema' (did you mean 'schema'?)"),
        ('fallbak = "primary_wins"\n', "unknown key 'fallbak' (did you mean 'fallback'?)"),
        (
            "[auto_responses]\nrollback_on_latancy = false\n",
            "unknown key 'rollback_on_latancy' in [auto_responses] "
            "(did you mean 'rollback_on_latency'?)",
        ),
        (
            "[backfill]\nwokers = 8\n",
            "unknown key 'wokers' in [backfill] (did you mean 'workers'?)",
        ),
        (
            '[legacy_tables.CASHOUT]\ntable = "cashouts"\nstauts = "state"\n',
            "unknown key 'stauts' in [legacy_tables.CASHOUT] (did you mean 'status'?)",
        ),
        (
            "retention = {idempotency_key_days = 3}\n",
            "unknown key 'idempotency_key_days' in [retention] "
            "(did you mean 'idempotency_keys_days'?)",
        ),
        (
            '[[api_tokens]]\nname = "a"\ntoken = "t-1"\nrol = "admin"\n',
            "unknown key 'rol' in [[api_tokens]] number 1 (did you mean 'role'?)",
        ),
        ('colour = "blue"\n', "unknown key 'colour'"),
    ],
)
def test_an_unknown_key_in_the_file_is_refused_where_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, named: str
) -> None:
    path = _config(tmp_path, monkeypatch, toml)
    message = _refusal()
    assert message.startswith(f"{CONFIG_FILE_ENV}={path}: "), message
    assert named in message


def test_every_unknown_key_of_the_file_is_named_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(
        tmp_path,
        monkeypatch,
        'shema = "unistatus"\nfallbak = "primary_wins"\n'
        "[auto_responses]\nrollback_on_latancy = false\n[backfill]\nwokers = 8\n"
        '[legacy_tables.CASHOUT]\ntable = "cashouts"\nstauts = "state"\n',
    )
    message = _refusal()
    for key in ("shema", "fallbak", "rollback_on_latancy", "wokers", "stauts"):
        assert f"'{key}'" in message


def test_the_command_line_exits_2_on_an_unknown_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(tmp_path, monkeypatch, "[auto_responses]\nrollback_on_latancy = false\n")
    result = CliRunner().invoke(app, ["mapping", "--validate"], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "unknown key 'rollback_on_latancy' in [auto_responses]" in err


def test_an_unknown_keyword_is_refused() -> None:
    assert "unknown setting 'shema' (did you mean 'schema'?)" in _refusal(shema="unistatus")


def test_an_unknown_nested_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNISTATUS_BACKFILL__WOKERS", "8")
    message = _refusal()
    assert message.startswith("UNISTATUS_BACKFILL__WOKERS: "), message
    assert "unknown setting 'wokers' in backfill (did you mean 'workers'?)" in message


def test_a_misspelt_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNISTATUS_SHEMA", "unistatus")
    monkeypatch.setenv("UNISTATUS_FALBACK", "primary_wins")
    message = _refusal()
    assert "UNISTATUS_FALBACK: unknown setting (did you mean UNISTATUS_FALLBACK?)" in message
    assert "UNISTATUS_SHEMA: unknown setting (did you mean UNISTATUS_SCHEMA?)" in message


def test_another_unistatus_variable_is_only_warned_of(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A Kubernetes Service called "unistatus" gives every pod of its namespace these.
    monkeypatch.setenv("UNISTATUS_SERVICE_HOST", "10.0.0.7")
    monkeypatch.setenv("UNISTATUS_PORT", "tcp://10.0.0.7:8000")
    # What unistatus and its test suite read besides the settings: never warned of.
    monkeypatch.setenv("UNISTATUS_TEST_POSTGRES_URL", "postgresql://localhost/x")
    monkeypatch.setenv("UNISTATUS_CAPTURE_STRESS_ROWS", "10")
    monkeypatch.setenv("FALBACK", "primary_wins")  # without the prefix: none of ours
    monkeypatch.setattr(config, "_warned", set())  # said once per process: this one's first
    with caplog.at_level(logging.WARNING, logger="unistatus"):
        settings = load_settings()
        load_settings()  # every adapter and command loads them: said once
    assert settings.fallback == "strict"
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1, warned
    assert "UNISTATUS_PORT, UNISTATUS_SERVICE_HOST" in warned[0]
    assert "not a setting" in warned[0] and "\n" not in warned[0]


def test_the_settings_the_docs_name_still_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = Path(__file__).parent.parent / "examples" / "payments_service" / "unistatus.toml"
    monkeypatch.setenv(CONFIG_FILE_ENV, str(example))
    monkeypatch.setenv("UNISTATUS_BACKFILL__WORKERS", "3")
    monkeypatch.setenv("UNISTATUS_LEGACY_TABLES__ESCROW__TABLE", "deals")
    monkeypatch.setenv("unistatus_retention__idempotency_keys_days", "3")
    settings = load_settings()
    assert settings.backfill.workers == 3
    assert settings.legacy_tables["ESCROW"].table == "deals"
    assert settings.retention.idempotency_keys_days == 3


# --- K2: a variable holding JSON that is not JSON ---------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "UNISTATUS_API_TOKENS",
            '[{"name": "x", "token": "abc-secret", "role": "writer"}',
            "invalid setting api_tokens: UNISTATUS_API_TOKENS is not valid JSON: "
            "Expecting ',' delimiter: line 1 column 56",
        ),
        (
            "UNISTATUS_MAPPING",
            '{"CASHOUT": {"REFUND_REQUESTED": "CANCELLED",}}',
            "invalid setting mapping: UNISTATUS_MAPPING is not valid JSON: "
            "Expecting property name enclosed in double quotes",
        ),
        (
            "unistatus_auto_responses",
            "{rollback_on_latency: false}",
            "invalid setting auto_responses: unistatus_auto_responses is not valid JSON",
        ),
    ],
)
def test_a_variable_that_is_not_json_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    said = _refusal()
    assert said.startswith(message), said
    assert "abc-secret" not in said  # a token's value is never said


# --- K3: numbers out of what their use takes --------------------------------------------

PG_INT_MAX = 2_147_483_647  # the largest millisecond a PostgreSQL setting (GUC) takes


@pytest.mark.parametrize(
    ("variable", "value", "setting"),
    [
        # httpx refuses such a timeout at every webhook delivery, long after the start.
        ("UNISTATUS_WEBHOOK_TIMEOUT_SECONDS", "-5", "webhook_timeout_seconds"),
        ("UNISTATUS_WEBHOOK_TIMEOUT_SECONDS", "0", "webhook_timeout_seconds"),
        ("UNISTATUS_WEBHOOK_TIMEOUT_SECONDS", "nan", "webhook_timeout_seconds"),
        ("UNISTATUS_WEBHOOK_TIMEOUT_SECONDS", "inf", "webhook_timeout_seconds"),
        ("UNISTATUS_WEBHOOK_TIMEOUT_SECONDS", "1e12", "webhook_timeout_seconds"),
        # PostgreSQL refuses these mid-backfill ("rerun"), or at every adapter connection.
        ("UNISTATUS_STATEMENT_TIMEOUT_MS", str(PG_INT_MAX + 1), "statement_timeout_ms"),
        ("UNISTATUS_LOCK_TIMEOUT_MS", "3000000000", "lock_timeout_ms"),
        # Never passed, never reached: the soak gate or the throttle can then never act.
        ("UNISTATUS_SOAK_SECONDS", "inf", "soak_seconds"),
        ("UNISTATUS_BACKFILL__MAX_P95_MS", "inf", "backfill.max_p95_ms"),
        ("UNISTATUS_BACKFILL__P95_OVER_BASELINE", "inf", "backfill.p95_over_baseline"),
        (
            "UNISTATUS_BACKFILL__MAX_REPLICATION_LAG_SECONDS",
            "inf",
            "backfill.max_replication_lag_seconds",
        ),
    ],
)
def test_a_number_out_of_bounds_is_refused_at_load(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, setting: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert _refusal().startswith(f"{variable}: invalid setting {setting}: ")


def test_nan_is_said_to_be_no_number(monkeypatch: pytest.MonkeyPatch) -> None:
    # Refused before, but as "Input should be less than or equal to 60".
    monkeypatch.setenv("UNISTATUS_MODE_REFRESH_SECONDS", "nan")
    assert _refusal() == (
        "UNISTATUS_MODE_REFRESH_SECONDS: invalid setting mode_refresh_seconds: "
        "Input should be a finite number"
    )


def test_the_largest_bounds_still_load() -> None:
    settings = load_settings(
        statement_timeout_ms=PG_INT_MAX, lock_timeout_ms=PG_INT_MAX, webhook_timeout_seconds=300
    )
    assert settings.statement_timeout_ms == settings.lock_timeout_ms == PG_INT_MAX


# --- K4: the tokens' checks name the setting --------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"admin_token": "same", "writer_token": "same"},
            "invalid setting api_tokens: the admin token, the writer token and the API "
            "tokens must all differ",
        ),
        (
            {"admin_token": "t-1", "api_tokens": [{"name": "ci", "token": "t-1"}]},
            "invalid setting api_tokens: the admin token, the writer token and the API "
            "tokens must all differ",
        ),
        (
            {"api_tokens": [{"name": "ci", "token": "t 1"}]},
            "invalid setting api_tokens: an API token is sent in an HTTP header",
        ),
        (
            {"api_tokens": [{"name": "a", "token": "t1"}, {"name": "a", "token": "t2"}]},
            "invalid setting api_tokens: two API tokens have the same name",
        ),
    ],
)
def test_a_token_refused_is_said_of_api_tokens(overrides: dict[str, object], message: str) -> None:
    said = _refusal(**overrides)
    assert said.startswith(message), said


# --- K5: a malformed value is said of where it was written --------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "setting"),
    [
        ("UNISTATUS_WRITE_QUEUE_TIMEOUT_SECONDS", "abc", "write_queue_timeout_seconds"),
        ("UNISTATUS_NETWORK__CONNECT_TIMEOUT_SECONDS", "-5", "network.connect_timeout_seconds"),
        ("unistatus_backfill__workers", "many", "backfill.workers"),
        ("UNISTATUS_NETWORK", '{"connect_timeout_seconds": -5}', "network.connect_timeout_seconds"),
    ],
)
def test_a_malformed_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, setting: str
) -> None:
    """The variable the user set, not only the setting's name (a typo already named its
    variable): `UNISTATUS_WRITE_QUEUE_TIMEOUT_SECONDS=abc unistatus mode get` said
    "invalid setting write_queue_timeout_seconds: ..." (exploratory review)."""
    monkeypatch.setenv(variable, value)
    said = _refusal()
    assert said.startswith(f"{variable}: invalid setting {setting}: "), said
    assert value not in said  # the value is never said (it may be a token)


def test_a_malformed_key_of_the_file_is_said_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config(tmp_path, monkeypatch, "[network]\nconnect_timeout_seconds = -5\n")
    said = _refusal()
    assert said.startswith(
        f"{CONFIG_FILE_ENV}={path}: invalid setting network.connect_timeout_seconds: "
    ), said


def test_a_malformed_keyword_is_said_of_the_setting() -> None:
    """Given by the caller (a keyword, the command line's --database-url): no variable."""
    said = _refusal(write_queue_timeout_seconds="abc")
    assert said.startswith("invalid setting write_queue_timeout_seconds: "), said


def test_the_command_line_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNISTATUS_WRITE_QUEUE_TIMEOUT_SECONDS", "abc")
    done = CliRunner().invoke(app, ["--database-url", "sqlite://", "mode", "get"])
    assert done.exit_code == 2, done.output
    assert done.stderr.startswith(
        "error: UNISTATUS_WRITE_QUEUE_TIMEOUT_SECONDS: invalid setting "
        "write_queue_timeout_seconds: "
    ), done.stderr


def test_a_config_path_that_is_a_directory_is_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said "no such file" of a directory (found by a probe)."""
    monkeypatch.setenv(CONFIG_FILE_ENV, str(tmp_path))
    assert _refusal() == f"{CONFIG_FILE_ENV}={tmp_path}: a directory, not a file"
    monkeypatch.setenv(CONFIG_FILE_ENV, str(tmp_path / "none.toml"))
    assert _refusal().endswith(": no such file")


# --- the config file as a file, and values found only when used (a probe) ----------------


def _as_nobody(path: Path) -> None:
    """``path`` unreadable, also for root: no read bit, and the test skips where root
    reads it anyway."""
    import os

    path.chmod(0o000)
    if os.access(path, os.R_OK):
        pytest.skip("this user reads a file without read permission (root)")


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b'schema = "x\xff\xfe"\n', "not UTF-8 text (byte 0xff at offset 11)"),
        (b'\xef\xbb\xbfschema = "unistatus"\n', "begins with a byte order mark"),
    ],
    ids=["not utf-8", "bom"],
)
def test_a_config_file_that_is_no_utf8_toml_is_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, said: str
) -> None:
    """A file of other bytes let UnicodeDecodeError out ("unexpected UnicodeDecodeError",
    the file not named); one beginning with a BOM was "Invalid statement (at line 1,
    column 1)"."""
    path = tmp_path / "unistatus.toml"
    path.write_bytes(content)
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    message = _refusal()
    assert message.startswith(f"{CONFIG_FILE_ENV}={path}: "), message
    assert said in message, message


def test_an_unreadable_config_file_is_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config(tmp_path, monkeypatch, 'schema = "unistatus"\n')
    _as_nobody(path)
    assert _refusal() == f"{CONFIG_FILE_ENV}={path}: cannot be read: permission denied"


def test_a_config_path_that_is_no_regular_file_is_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/dev/null or a FIFO was "no such file"."""
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/null", str(fifo)):
        monkeypatch.setenv(CONFIG_FILE_ENV, path)
        assert _refusal() == f"{CONFIG_FILE_ENV}={path}: not a regular file"


def test_a_config_file_others_may_change_or_read_with_a_secret_is_warned_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A token in a file anyone may read, or anyone may change (adding a token of their
    own): no word of it (a probe). libpq ignores such a ~/.pgpass; here it is said."""
    path = _config(tmp_path, monkeypatch, 'admin_token = "s3cret-admin-token"\n')
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="unistatus"):
        load_settings()
    assert not caplog.records
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="unistatus"):
        load_settings()
    assert "others may read it" in caplog.text and "chmod 600" in caplog.text
    assert "s3cret" not in caplog.text
    caplog.clear()
    _config(tmp_path, monkeypatch, 'schema = "unistatus"\n').chmod(0o666)
    with caplog.at_level(logging.WARNING, logger="unistatus"):
        load_settings()
    assert "others may change it" in caplog.text


def test_an_empty_table_name_is_refused() -> None:
    """It let IndexError out ("unexpected IndexError: string index out of range")."""
    message = _refusal(legacy_tables={"CASHOUT": {"table": ""}})
    assert message.startswith("invalid setting legacy_tables.CASHOUT.table: "), message


def test_a_legacy_system_given_twice_is_refused() -> None:
    """`[legacy_tables.cashout]` and `[legacy_tables.CASHOUT]`: the last one won, in
    silence (a probe). [mapping.*] refused it already."""
    message = _refusal(legacy_tables={"cashout": {"table": "a"}, "CASHOUT": {"table": "b"}})
    assert "legacy system CASHOUT is given twice ('cashout', 'CASHOUT')" in message, message


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("hooks.example.com/services/T0/B0/SECRETPATH", "not an http:// or https:// URL"),
        ("ftp://hooks.example.com/services/SECRETPATH", "not an http:// or https:// URL"),
        ("https://hooks.example.com:SECRETPORT/x", "its port is not a number"),
        ("http://[bad/SECRETPATH", "not a URL"),
        ("https:///SECRETPATH", "no host"),
    ],
)
def test_a_webhook_url_is_checked_at_load(url: str, said: str) -> None:
    """Found only when an alert fired (each delivery failed), never at start."""
    message = _refusal(webhook_urls=[url])
    assert message.startswith("invalid setting webhook_urls"), message
    assert said in message, message
    assert "SECRET" not in message, message


def test_the_settings_repr_hides_the_password_and_the_webhook_secrets() -> None:
    """An application logging its settings, or an error tracker capturing locals, got
    the database password and each webhook's secret path (a probe)."""
    settings = load_settings(
        database_url="postgresql://app:S3cretPW@db.internal/payments",
        webhook_urls=["https://hooks.slack.com/services/T0/B0/XOXSECRET"],
        admin_token="adm1n-t0ken",
    )
    shown = repr(settings) + str(settings)
    for secret in ("S3cretPW", "XOXSECRET", "adm1n-t0ken"):
        assert secret not in shown, shown
    assert "db.internal" in shown and "hooks.slack.com" in shown


def test_a_legacy_name_with_a_nul_is_refused() -> None:
    """Found by the database, as a DataError of the first statement (a probe)."""
    message = _refusal(legacy_tables={"CASHOUT": {"table": "cash\x00outs"}})
    assert message.startswith("invalid setting legacy_tables.CASHOUT.table: "), message
    assert "NUL" in message


def test_a_legacy_schema_on_sqlite_is_refused(tmp_path: Path) -> None:
    """It said "cannot reach the database: no such table" (a StorageError)."""
    from unistatus.db.engine import create_engine
    from unistatus.db.legacy import resolve_legacy_tables

    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
        legacy_tables={"CASHOUT": {"table": "cashouts", "schema": "shop"}},
    )
    engine = create_engine(settings.database_url)
    try:
        with pytest.raises(ConfigError, match="SQLite has no schemas"):
            resolve_legacy_tables(engine, settings)
    finally:
        engine.dispose()


def test_secrets_come_from_a_directory_of_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tokens and the database URL could come only from the environment (visible to
    every process of the user, /proc/PID/environ) or a TOML file (a probe): a directory
    of one file each, as Docker's and Kubernetes' secrets are mounted, is read too."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "unistatus_admin_token").write_text("adm1n-from-a-file")
    (secrets / "unistatus_database_url").write_text("postgresql://app:pw@db/payments")
    monkeypatch.setenv("UNISTATUS_SECRETS_DIR", str(secrets))
    settings = load_settings()
    assert settings.admin_token == "adm1n-from-a-file"
    assert settings.database_url == "postgresql://app:pw@db/payments"
    monkeypatch.setenv("UNISTATUS_ADMIN_TOKEN", "from-the-environment")
    assert load_settings().admin_token == "from-the-environment"  # a variable wins
    monkeypatch.setenv("UNISTATUS_SECRETS_DIR", str(tmp_path / "none"))
    assert _refusal() == f"UNISTATUS_SECRETS_DIR={tmp_path / 'none'}: no such directory"


def test_a_variable_changes_one_key_of_a_system_the_file_describes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's [legacy_tables.CASHOUT] and UNISTATUS_LEGACY_TABLES__CASHOUT__TABLE: at
    first refused as a system "given twice" (a review); before that the variable's table
    won and the file's other keys were dropped in silence."""
    _config(tmp_path, monkeypatch, '[legacy_tables.CASHOUT]\ntable = "cashouts"\nid = "cid"\n')
    monkeypatch.setenv("UNISTATUS_LEGACY_TABLES__CASHOUT__TABLE", "payouts_v2")
    spec = load_settings().legacy_tables["CASHOUT"]
    assert (spec.table, spec.id) == ("payouts_v2", "cid")


def test_a_system_spelled_twice_in_the_file_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config(
        tmp_path,
        monkeypatch,
        '[legacy_tables.cashout]\ntable = "a"\n[legacy_tables.CASHOUT]\ntable = "b"\n',
    )
    assert _refusal() == (
        f"{CONFIG_FILE_ENV}={path}: legacy system CASHOUT is given twice ('cashout', 'CASHOUT')"
    )


def test_a_refusal_names_a_lower_case_system_as_the_file_wrote_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys spelled upper case while merged, a refusal blamed legacy_tables.CASHOUT (or
    the variable) for the file's [legacy_tables.cashout] (a second review)."""
    path = _config(tmp_path, monkeypatch, '[legacy_tables.cashout]\ntabel = "x"\n')
    message = _refusal()
    assert message.startswith(f"{CONFIG_FILE_ENV}={path}: unknown key 'tabel' in "), message
    assert "[legacy_tables.cashout]" in message, message


def test_a_system_spelled_twice_in_the_variable_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "UNISTATUS_LEGACY_TABLES", '{"cashout": {"table": "a"}, "CASHOUT": {"table": "b"}}'
    )
    assert _refusal() == (
        "UNISTATUS_LEGACY_TABLES: invalid setting legacy_tables: legacy system CASHOUT is "
        "given twice ('cashout', 'CASHOUT')"
    )
