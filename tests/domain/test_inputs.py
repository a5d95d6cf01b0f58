"""Input that must never turn into an outage or an alert (issue 10, section 3).

Every value a caller passes is refused up front, with a clear InputError (422 at the
API), when the database could not store it as it is: non-JSON numbers and lone
surrogates in metadata, digits that are not ASCII, ids with stray whitespace, numbers
past the column types, texts past their bounds. A refusal writes nothing and is never
counted as a write failure by the statistics the alerts and gates read.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import Database
from support.adapters import adapter_in, snapshot
from unistatus import DualWriteAdapter
from unistatus.api.service import create_app
from unistatus.cli import app as cli_app
from unistatus.domain.ids import LegacyRef, UtxId, parse_entity_id
from unistatus.domain.inputs import (
    MAX_ACTOR_CHARS,
    MAX_METADATA_DEPTH,
    MAX_REASON_CHARS,
    check_amount,
    check_metadata,
)
from unistatus.domain.statuses import DualWriteMode
from unistatus.errors import InputError, InvalidIdentifierError
from unistatus.observe.stats import OperationStats, window

WRITER = "writer-token-for-input-tests"
M = DualWriteMode

BAD_METADATA: list[tuple[str, dict[str, Any]]] = [
    ("NaN", {"x": float("nan")}),
    ("Infinity", {"x": float("inf")}),
    ("-Infinity", {"x": [1, {"y": float("-inf")}]}),
    ("1e400", {"x": float("1e400")}),
    ("lone surrogate value", {"x": "a\ud800b"}),
    ("lone surrogate key", {"\udfff": 1}),
    ("NUL", {"x": "a\x00b"}),
]


def _stats_errors(db: Database) -> tuple[int, int]:
    totals = window(db.engine, 3600).as_dict()
    return int(totals["count"]), int(totals["errors"])


@pytest.mark.parametrize("mode", [M.LEGACY_ONLY, M.DUAL_WRITE_LEGACY_PRIMARY, M.UNIFIED_ONLY])
def test_unstorable_metadata_is_refused_by_the_library_and_not_counted(
    db: Database, mode: DualWriteMode
) -> None:
    a = adapter_in(db, mode, record_stats=False)  # recorded by the test's own stats
    stats = OperationStats(db.engine, process_id="inputs", start=False).attach(a)
    entity = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id or ""
    if mode is M.LEGACY_ONLY:
        entity = f"cashout:{a.create_transaction('WALLET_CASHOUT', 1, '5', 'USD').legacy_entity_id}"
    before = snapshot(db)
    for name, meta in BAD_METADATA:
        with pytest.raises(InputError, match="metadata"):
            a.update_status(entity, "PROCESSING", "r", "t", metadata=meta)
        with pytest.raises(InputError, match="metadata"):
            a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", metadata=meta)
        assert snapshot(db) == before, name
    stats.flush()
    count, errors = _stats_errors(db)
    assert errors == 0, (count, errors)


def test_unstorable_metadata_is_a_422_at_the_api_and_not_counted(db: Database) -> None:
    from fastapi.testclient import TestClient

    settings = db.settings.model_copy(update={"writer_token": WRITER})
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    ref = f"cashout:{a.create_transaction('WALLET_CASHOUT', 1, '5', 'USD').legacy_entity_id}"
    before = snapshot(db)
    headers = {"Authorization": f"Bearer {WRITER}", "Content-Type": "application/json"}
    # Raw bodies: what a hostile client sends, NaN and 1e400 included.
    bodies = [
        '{"x": NaN}',
        '{"x": Infinity}',
        '{"x": -Infinity}',
        '{"x": 1e400}',
        '{"x": "\\ud800"}',
        '{"\\udfff": 1}',
        '{"x": "a\\u0000b"}',
    ]
    app = create_app(settings, db.engine)
    with TestClient(app) as client:
        for meta in bodies:
            create = (
                '{"transaction_type": "WALLET_CASHOUT", "user_id": 7, "amount": "1",'
                f' "currency": "USD", "metadata": {meta}}}'
            )
            r = client.post("/api/v1/transactions", content=create, headers=headers)
            assert r.status_code == 422, (meta, r.status_code, r.text)
            update = (
                '{"status": "PROCESSING", "reason": "r", "triggered_by": "t",'
                f' "metadata": {meta}}}'
            )
            r = client.post(f"/api/v1/transactions/{ref}/status", content=update, headers=headers)
            assert r.status_code == 422, (meta, r.status_code, r.text)
            assert "metadata" in r.text
            assert snapshot(db) == before, meta
    # The service flushed its statistics on shutdown: no write failure among them.
    assert _stats_errors(db)[1] == 0


# --- strict types at the API ----------------------------------------------------------


CREATE = {"transaction_type": "WALLET_CASHOUT", "user_id": 7, "amount": "1", "currency": "USD"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user_id", True),
        ("user_id", "7"),
        ("user_id", 7.0),
        ("user_id", 2**63),
        ("legacy_entity_id", 1761606.0),
        ("legacy_entity_id", "12"),
        ("legacy_entity_id", True),
        ("amount", 5),
        ("amount", "١٢٣"),
        ("amount", "１２"),
        ("amount", "1_000"),
        ("amount", "12\n"),
        ("currency", "USD\n"),
        ("metadata", []),
    ],
)
def test_the_api_takes_no_loose_types_on_create(db: Database, field: str, value: object) -> None:
    from fastapi.testclient import TestClient

    settings = db.settings.model_copy(update={"writer_token": WRITER})
    with TestClient(create_app(settings, db.engine)) as client:
        r = client.post(
            "/api/v1/transactions",
            json={**CREATE, field: value},
            headers={"Authorization": f"Bearer {WRITER}"},
        )
    assert r.status_code == 422, r.text
    assert db.count("cashouts") == 0 and db.count("unified_transactions") == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("force", "yes"), ("force", 1), ("force", "true"), ("reason", 5), ("triggered_by", 7)],
)
def test_the_api_takes_no_loose_types_on_update(db: Database, field: str, value: object) -> None:
    from fastapi.testclient import TestClient

    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    ref = f"cashout:{a.create_transaction('WALLET_CASHOUT', 1, '5', 'USD').legacy_entity_id}"
    before = snapshot(db)
    settings = db.settings.model_copy(update={"writer_token": WRITER, "admin_token": "adm"})
    body = {"status": "PROCESSING", "reason": "r", "triggered_by": "t", field: value}
    with TestClient(create_app(settings, db.engine)) as client:
        r = client.post(
            f"/api/v1/transactions/{ref}/status", json=body, headers={"Authorization": "Bearer adm"}
        )
    assert r.status_code == 422, r.text
    assert snapshot(db) == before


# --- ASCII digits, exact ids ------------------------------------------------------------


NOT_ASCII_AMOUNTS = ["١٢٣", "１２", "1_000", "12\n", " 12", "1e3", "0x10", "٣.٥", "12.５"]


@pytest.mark.parametrize("amount", NOT_ASCII_AMOUNTS)
def test_amounts_are_ascii_decimals_only(db: Database, amount: str) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    with pytest.raises(InputError, match="amount"):
        a.create_transaction("WALLET_CASHOUT", 1, amount, "USD")
    assert db.count("cashouts") == 0 and db.count("unified_transactions") == 0


BAD_IDS = [
    "cashout:١٠",
    "cashout:１",
    "cashout:1\n",
    "cashout:1 ",
    " cashout:1",
    "cashout: 1",
    "cashout:1_0",
    "cashout:+1",
    "UTX10000000000000１",
    "UTX100000000000001\n",
    "\tUTX100000000000001",
]


@pytest.mark.parametrize("entity_id", BAD_IDS)
def test_ids_are_exact_and_ascii(db: Database, entity_id: str) -> None:
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    for _ in range(10):
        a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    before = snapshot(db)
    with pytest.raises(InvalidIdentifierError, match="malformed id"):
        a.update_status(entity_id, "PROCESSING", "r", "t")
    with pytest.raises(InvalidIdentifierError, match="malformed id"):
        a.get_transaction_status(entity_id)
    assert snapshot(db) == before


def test_the_api_refuses_non_ascii_and_padded_ids(db: Database) -> None:
    from fastapi.testclient import TestClient

    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    for _ in range(10):
        a.create_transaction("WALLET_CASHOUT", 1, "5", "USD")
    before = snapshot(db)
    settings = db.settings.model_copy(update={"writer_token": WRITER})
    body = {"status": "PROCESSING", "reason": "r", "triggered_by": "t"}
    with TestClient(create_app(settings, db.engine)) as client:
        for entity_id in ("cashout:١٠", "cashout:10%0A", "cashout:%EF%BC%91"):
            r = client.post(
                f"/api/v1/transactions/{entity_id}/status",
                json=body,
                headers={"Authorization": f"Bearer {WRITER}"},
            )
            assert r.status_code == 422, (entity_id, r.text)
            assert "malformed id" in r.json()["detail"]
    assert snapshot(db) == before


_ID = re.compile(r"(?i:cashouts?|escrows?|exchanges?):[0-9]{1,14}|UTX[0-9]{15}")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=24), st.from_regex(_ID, fullmatch=True).map(lambda s: s + "\n")))
def test_an_id_parses_only_when_it_is_exactly_a_canonical_form(text: str) -> None:
    try:
        ref = parse_entity_id(text)
    except InvalidIdentifierError:
        return
    assert _ID.fullmatch(text), repr(text)
    assert isinstance(ref, LegacyRef | UtxId)


_AMOUNT = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(alphabet=st.characters(categories=["Nd", "Pc", "Zs"]) | st.sampled_from("0123456789.-_eE\n"), max_size=16), st.decimals().map(str)))  # fmt: skip
def test_an_amount_string_is_accepted_only_in_plain_ascii(text: str) -> None:
    try:
        value = check_amount(text)
    except InputError:
        return
    assert _AMOUNT.fullmatch(text), repr(text)
    assert value == Decimal(text)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=5), children, max_size=3)
        ),
        max_leaves=8,
    )
)
def test_metadata_is_accepted_only_when_strict_json_can_carry_it(value: Any) -> None:
    import json

    meta = {"v": value}
    try:
        check_metadata(meta)
    except InputError:
        return
    text = json.dumps(meta, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogate
    assert "\x00" not in text and "\\u0000" not in text


# --- bounds ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda a, e: a.create_transaction("WALLET_CASHOUT", 2**63, "5", "USD"), "user_id"),
        (lambda a, e: a.create_transaction("WALLET_CASHOUT", 10**30, "5", "USD"), "user_id"),
        (lambda a, e: a.update_status(e, "PROCESSING", "r", "x" * 1000), "triggered_by"),
        (lambda a, e: a.update_status(e, "PROCESSING", "r" * 120_000, "t"), "reason"),
        (lambda a, e: a.update_status(e, "PROCESSING", "r\x00", "t"), "reason"),
        (lambda a, e: a.update_status(e, "PROCESSING", "r\ud800", "t"), "reason"),
        (lambda a, e: a.update_status(e, "PROCESSING", "r", "t\ud800"), "triggered_by"),
        (lambda a, e: a.update_status(e, "PROCESSING", "r", "t\x00"), "triggered_by"),
        (lambda a, e: a.update_status(e, "PROCESSING", 5, "t"), "reason"),
        (lambda a, e: a.update_status(e, "PROCESS\x00ING", "r", "t"), "status"),
        (lambda a, e: a.update_status(e, "PROCESSING\ud800", "r", "t"), "status"),
    ],
)
def test_values_past_their_bounds_are_refused_before_the_database(
    db: Database, call: Any, fragment: str
) -> None:
    # Recorded by the test's own stats, not the default ones.
    a: DualWriteAdapter = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY, record_stats=False)
    stats = OperationStats(db.engine, process_id="bounds", start=False).attach(a)
    entity = a.create_transaction("WALLET_CASHOUT", 1, "5", "USD").entity_id or ""
    before = snapshot(db)
    with pytest.raises(InputError, match=fragment):
        call(a, entity)
    assert snapshot(db) == before
    stats.flush()
    assert _stats_errors(db)[1] == 0


def test_bounds_fit_the_columns() -> None:
    from unistatus.db.tables import control_log, status_history

    assert MAX_ACTOR_CHARS <= status_history.c.triggered_by.type.length  # type: ignore[attr-defined]
    assert MAX_ACTOR_CHARS <= control_log.c.actor.type.length  # type: ignore[attr-defined]
    assert MAX_REASON_CHARS >= 500  # what the API took before


# --- the CLI's one-line errors ------------------------------------------------------------


runner = CliRunner()


def _one_line_exit_2(args: list[str]) -> str:
    result = runner.invoke(cli_app, args, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error:") and "\n" not in err, err
    assert "unexpected" not in err and "Traceback" not in result.output, err
    return err


def test_check_since_too_far_back_is_a_clear_error(sqlite_db: Database) -> None:
    for since in ("99999999999d", "99999999999999999999w", "1e400s"):
        err = _one_line_exit_2(["--database-url", sqlite_db.url, "check", "--since", since])
        assert "--since" in err
    err = _one_line_exit_2(["--database-url", sqlite_db.url, "check", "--since", "٣d"])
    assert "--since" in err


def test_archive_export_to_an_impossible_directory_is_a_clear_error(
    sqlite_db: Database, tmp_path: Path
) -> None:
    afile = tmp_path / "a-file"
    afile.write_text("x")
    for out in ("/proc/x", str(afile), str(afile / "sub")):
        err = _one_line_exit_2(["--database-url", sqlite_db.url, "archive", "export", "--out", out])
        assert out in err


@pytest.mark.parametrize(
    "value", ["k", "a b", " k", "k ", "k\n", "ké", "tab\there", "~!", "", "x" * 255, "x" * 256]
)
def test_header_safe_text_is_one_rule(value: str) -> None:
    """Idempotency keys and API tokens travel in HTTP headers: one check
    (:func:`unistatus.domain.inputs.is_header_text`) decides both; a token also has no spaces."""
    from unistatus.adapter.keys import check_key as adapter_check_key
    from unistatus.config import load_settings
    from unistatus.domain.inputs import MAX_KEY_CHARS, check_key, is_header_text
    from unistatus.errors import ConfigError

    assert adapter_check_key is check_key
    key_ok = is_header_text(value) and len(value) <= MAX_KEY_CHARS
    try:
        check_key(value)
        accepted = True
    except InputError:
        accepted = False
    assert accepted == key_ok
    try:
        load_settings(writer_token=value or None)
        token_ok = True
    except ConfigError:
        token_ok = False
    assert token_ok == (value == "" or is_header_text(value, spaces=False))


# --- one metadata rule for the library and the API (issue 11) ----------------------------

# What the API's request model refuses and the library used to store changed (a key
# written as text: 1 became "1", and {1: ..., "1": ...} stored one key twice).
NOT_TEXT_KEYS: list[tuple[str, dict[Any, Any]]] = [
    ("an integer key", {1: "a"}),
    ("a boolean key", {True: "a"}),
    ("a None key", {None: "a"}),
    ("a float key", {1.5: "a"}),
    ("two keys that are one once written", {1: "a", "1": "b"}),
]


def _nested(depth: int) -> dict[str, Any]:
    """A metadata object ``depth`` levels deep (built without recursion)."""
    value: Any = []
    for _ in range(depth - 2):
        value = [value]
    return {"x": value}


def _api_refuses(meta: object) -> bool:
    """Whether the API's request models refuse ``meta`` as a metadata value."""
    from pydantic import ValidationError

    from unistatus.api.models import StatusUpdate, TransactionCreate

    refused = []
    for model, body in (
        (StatusUpdate, {"status": "PROCESSING", "reason": "r"}),
        (TransactionCreate, CREATE),
    ):
        try:
            model.model_validate({**body, "metadata": meta})
            refused.append(False)
        except ValidationError:
            refused.append(True)
    assert refused[0] == refused[1], meta
    return refused[0]


def _library_refuses(meta: object) -> bool:
    try:
        check_metadata(meta)
    except InputError as exc:
        assert "metadata" in str(exc)
        return True
    return False


@pytest.mark.parametrize(("name", "meta"), NOT_TEXT_KEYS)
def test_the_library_refuses_the_metadata_the_api_refuses(name: str, meta: dict[Any, Any]) -> None:
    assert _api_refuses(meta), name
    with pytest.raises(InputError, match="metadata .*key"):
        check_metadata(meta)


def test_metadata_keys_are_text_at_every_level() -> None:
    for meta in ({"a": {1: "b"}}, {"a": [{"b": {None: 1}}]}):
        with pytest.raises(InputError, match="metadata .*key"):
            check_metadata(meta)
        assert _api_refuses(meta)


def test_metadata_nesting_has_one_bound() -> None:
    """The API's JSON parser gives up on deep nesting wherever the server's stack ends
    (near 960 levels here); one fixed bound, well below, holds for both."""
    assert check_metadata(_nested(MAX_METADATA_DEPTH)) is not None
    assert not _api_refuses(_nested(MAX_METADATA_DEPTH))
    for depth in (MAX_METADATA_DEPTH + 1, 5_000):
        with pytest.raises(InputError, match="metadata is nested too deeply"):
            check_metadata(_nested(depth))
        assert _api_refuses(_nested(depth))


def test_metadata_the_api_cannot_parse_is_refused_by_the_library(db: Database) -> None:
    from fastapi.testclient import TestClient

    settings = db.settings.model_copy(update={"writer_token": WRITER})
    a = adapter_in(db, M.DUAL_WRITE_LEGACY_PRIMARY)
    ref = f"cashout:{a.create_transaction('WALLET_CASHOUT', 1, '5', 'USD').legacy_entity_id}"
    before = snapshot(db)
    headers = {"Authorization": f"Bearer {WRITER}", "Content-Type": "application/json"}
    depth = 1_000
    meta = '{"x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    body = '{"status": "PROCESSING", "reason": "r", "metadata": ' + meta + "}"
    with TestClient(create_app(settings, db.engine)) as client:
        r = client.post(f"/api/v1/transactions/{ref}/status", content=body, headers=headers)
    assert r.status_code in (400, 422), r.text
    for library_call in (
        lambda: a.update_status(ref, "PROCESSING", "r", "t", metadata=_nested(depth)),
        lambda: a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", metadata=_nested(depth)),
    ):
        with pytest.raises(InputError, match="metadata is nested too deeply"):
            library_call()
    for name, not_text in NOT_TEXT_KEYS:
        with pytest.raises(InputError, match="metadata"):
            a.update_status(ref, "PROCESSING", "r", "t", metadata=not_text)
        with pytest.raises(InputError, match="metadata"):
            a.create_transaction("WALLET_CASHOUT", 1, "5", "USD", metadata=not_text)
        assert snapshot(db) == before, name
    assert snapshot(db) == before


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=3)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(
            st.text(max_size=3) | st.integers() | st.booleans() | st.none(), children, max_size=3
        )
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=3) | st.integers(), _JSONISH, max_size=3))
def test_the_library_and_the_api_refuse_the_same_metadata(meta: dict[Any, Any]) -> None:
    assert _library_refuses(meta) == _api_refuses(meta), meta
