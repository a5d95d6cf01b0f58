"""The mapping against the spec's tables, restated here independently of the code.

If someone edits ``unistatus.domain.mapping`` so that it drifts from
``docs/status-model.md``, these tests fail: the tables below are copied from the
spec, not imported from the package.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from unistatus.domain.mapping import (
    LegacyStatusMapper,
    compatible_clause,
    forward_case,
    reverse_case,
)
from unistatus.domain.statuses import (
    CashoutStatus,
    EscrowStatus,
    ExchangeStatus,
    LegacySystemType,
    UnifiedTransactionStatus,
    UnifiedTransactionType,
)
from unistatus.errors import InvalidStatusError, UnmappableStatusError

CASHOUT = LegacySystemType.CASHOUT
ESCROW = LegacySystemType.ESCROW
EXCHANGE = LegacySystemType.EXCHANGE

# --- the spec's tables, verbatim ----------------------------------------------------

SPEC_FORWARD: dict[LegacySystemType, dict[str, str]] = {
    CASHOUT: {
        "PENDING": "PENDING",
        "OTP_PENDING": "OTP_PENDING",
        "USER_CONFIRM_PENDING": "AWAITING_APPROVAL",
        "ADMIN_PENDING": "ADMIN_PENDING",
        "PENDING_ADDRESS_CONFIG": "ADMIN_PENDING",
        "PENDING_SERVICE_FUNDING": "ADMIN_PENDING",
        "APPROVED": "FUNDS_HELD",
        "EXECUTING": "PROCESSING",
        "AWAITING_RESPONSE": "AWAITING_RESPONSE",
        "SUCCESS": "SUCCESS",
        "COMPLETED": "SUCCESS",
        "FAILED": "FAILED",
        "CANCELLED": "CANCELLED",
        "EXPIRED": "EXPIRED",
    },
    ESCROW: {
        "CREATED": "PENDING",
        "PAYMENT_PENDING": "AWAITING_PAYMENT",
        "PAYMENT_CONFIRMED": "PAYMENT_CONFIRMED",
        "PARTIAL_PAYMENT": "PARTIAL_PAYMENT",
        "AWAITING_SELLER": "AWAITING_APPROVAL",
        "PENDING_SELLER": "AWAITING_APPROVAL",
        "PENDING_DEPOSIT": "AWAITING_PAYMENT",
        "ACTIVE": "FUNDS_HELD",
        "COMPLETED": "SUCCESS",
        "DISPUTED": "DISPUTED",
        "CANCELLED": "CANCELLED",
        "REFUNDED": "CANCELLED",
        "EXPIRED": "EXPIRED",
    },
    EXCHANGE: {
        "CREATED": "PENDING",
        "AWAITING_DEPOSIT": "AWAITING_PAYMENT",
        "RATE_LOCKED": "PENDING",
        "PAYMENT_RECEIVED": "PAYMENT_CONFIRMED",
        "PAYMENT_CONFIRMED": "PAYMENT_CONFIRMED",
        "PROCESSING": "PROCESSING",
        "COMPLETED": "SUCCESS",
        "FAILED": "FAILED",
        "CANCELLED": "CANCELLED",
        "ADDRESS_GENERATION_FAILED": "FAILED",
        "PENDING_APPROVAL": "ADMIN_PENDING",
    },
}

SPEC_REVERSE: dict[UnifiedTransactionType, dict[str, str]] = {
    UnifiedTransactionType.WALLET_CASHOUT: {
        "PENDING": "PENDING",
        "OTP_PENDING": "OTP_PENDING",
        "AWAITING_APPROVAL": "USER_CONFIRM_PENDING",
        "ADMIN_PENDING": "ADMIN_PENDING",
        "FUNDS_HELD": "APPROVED",
        "PROCESSING": "EXECUTING",
        "AWAITING_RESPONSE": "AWAITING_RESPONSE",
        "SUCCESS": "SUCCESS",
        "FAILED": "FAILED",
        "CANCELLED": "CANCELLED",
        "EXPIRED": "EXPIRED",
    },
    UnifiedTransactionType.ESCROW: {
        "PENDING": "CREATED",
        "AWAITING_PAYMENT": "PAYMENT_PENDING",
        "PAYMENT_CONFIRMED": "PAYMENT_CONFIRMED",
        "PARTIAL_PAYMENT": "PARTIAL_PAYMENT",
        "AWAITING_APPROVAL": "AWAITING_SELLER",
        "FUNDS_HELD": "ACTIVE",
        "RELEASE_PENDING": "ACTIVE",
        "SUCCESS": "COMPLETED",
        "DISPUTED": "DISPUTED",
        "CANCELLED": "CANCELLED",
        "EXPIRED": "EXPIRED",
    },
    UnifiedTransactionType.EXCHANGE: {
        "PENDING": "CREATED",
        "AWAITING_PAYMENT": "AWAITING_DEPOSIT",
        "PAYMENT_CONFIRMED": "PAYMENT_CONFIRMED",
        "ADMIN_PENDING": "PENDING_APPROVAL",
        "PROCESSING": "PROCESSING",
        "SUCCESS": "COMPLETED",
        "FAILED": "FAILED",
        "CANCELLED": "CANCELLED",
    },
}

SPEC_PHASES = {
    "initiation": {"PENDING", "AWAITING_PAYMENT", "PAYMENT_CONFIRMED"},
    "authorization": {"FUNDS_HELD", "AWAITING_APPROVAL", "OTP_PENDING", "ADMIN_PENDING"},
    "processing": {"PROCESSING", "AWAITING_RESPONSE", "RELEASE_PENDING"},
    "terminal": {"SUCCESS", "FAILED", "CANCELLED", "DISPUTED", "EXPIRED", "PARTIAL_PAYMENT"},
}
SPEC_FINAL = {"SUCCESS", "FAILED", "CANCELLED", "EXPIRED"}
ENUMS = {CASHOUT: CashoutStatus, ESCROW: EscrowStatus, EXCHANGE: ExchangeStatus}

mapper = LegacyStatusMapper()
systems = st.sampled_from(list(LegacySystemType))
unified = st.sampled_from([u.value for u in UnifiedTransactionStatus])


def legacy_of(system: LegacySystemType) -> st.SearchStrategy[str]:
    return st.sampled_from(sorted(SPEC_FORWARD[system]))


def spec_compatible(system: LegacySystemType, ls: str, us: str) -> bool:
    return SPEC_FORWARD[system].get(ls) == us or SPEC_REVERSE[system.transaction_type].get(us) == ls


# --- exact tables ---------------------------------------------------------------------


@pytest.mark.parametrize("system", list(LegacySystemType))
def test_enum_values_are_exactly_the_spec_legacy_statuses(system: LegacySystemType) -> None:
    assert {m.value for m in ENUMS[system]} == set(SPEC_FORWARD[system])


@pytest.mark.parametrize("system", list(LegacySystemType))
def test_forward_table_is_the_spec(system: LegacySystemType) -> None:
    assert mapper.forward_table(system) == SPEC_FORWARD[system]
    for legacy, target in SPEC_FORWARD[system].items():
        assert mapper.to_unified(system, legacy) is UnifiedTransactionStatus(target)
        assert mapper.to_unified(system, ENUMS[system](legacy)) is UnifiedTransactionStatus(target)
        assert mapper.to_unified(system.value.lower(), legacy).value == target


@pytest.mark.parametrize("ttype", list(UnifiedTransactionType))
def test_reverse_table_and_valid_statuses_are_the_spec(ttype: UnifiedTransactionType) -> None:
    assert mapper.reverse_table(ttype) == SPEC_REVERSE[ttype]
    assert {s.value for s in mapper.valid_statuses(ttype)} == set(SPEC_REVERSE[ttype])
    for target, legacy in SPEC_REVERSE[ttype].items():
        assert mapper.to_legacy(ttype, target) == legacy


def test_unified_phases_and_finality() -> None:
    assert {u.value for u in UnifiedTransactionStatus} == set().union(*SPEC_PHASES.values())
    assert len(UnifiedTransactionStatus) == 16
    for phase, members in SPEC_PHASES.items():
        for name in members:
            assert UnifiedTransactionStatus(name).phase.value == phase
    assert {u.value for u in UnifiedTransactionStatus if u.is_final} == SPEC_FINAL


def test_validate_report_is_clean() -> None:
    report = mapper.validate()
    assert report.ok, report.problems
    assert report.total_legacy == 38 and report.coverage == 1.0
    assert len(report.unified_reachable) == 16


# --- properties -----------------------------------------------------------------------


@given(st.data())
def test_forward_of_reverse_is_compatible(data: st.DataObject) -> None:
    ttype = data.draw(st.sampled_from(list(UnifiedTransactionType)))
    target = data.draw(st.sampled_from(sorted(SPEC_REVERSE[ttype])))
    legacy = mapper.to_legacy(ttype, target)
    assert mapper.is_compatible(ttype.legacy_system, legacy, target)
    assert spec_compatible(ttype.legacy_system, legacy, target)


@given(st.data())
def test_to_legacy_keeps_current_when_it_maps_there(data: st.DataObject) -> None:
    system = data.draw(systems)
    ttype = system.transaction_type
    current = data.draw(legacy_of(system))
    target = data.draw(st.sampled_from(sorted(SPEC_REVERSE[ttype])))
    got = mapper.to_legacy(ttype, target, current=current)
    if SPEC_FORWARD[system][current] == target:
        assert got == current
    else:
        assert got == SPEC_REVERSE[ttype][target]


@given(st.data())
def test_is_compatible_truth_table(data: st.DataObject) -> None:
    system = data.draw(systems)
    ls = data.draw(st.one_of(legacy_of(system), st.text(max_size=12)))
    us = data.draw(unified)
    assert mapper.is_compatible(system, ls, us) == spec_compatible(system, ls, us)


@given(system=systems, us=unified)
def test_is_compatible_false_for_null(system: LegacySystemType, us: str) -> None:
    assert not mapper.is_compatible(system, None, us)


@given(system=systems, raw=st.text(max_size=30))
def test_unknown_values_are_unmappable(system: LegacySystemType, raw: str) -> None:
    if raw in SPEC_FORWARD[system]:
        return
    with pytest.raises(UnmappableStatusError) as info:
        mapper.to_unified(system, raw)
    assert system.value in str(info.value)
    assert mapper.try_to_unified(system, raw) is None


@given(system=systems, data=st.data())
def test_lower_case_is_unmappable(system: LegacySystemType, data: st.DataObject) -> None:
    legacy = data.draw(legacy_of(system))
    with pytest.raises(UnmappableStatusError):
        mapper.to_unified(system, legacy.lower())


@given(data=st.data())
def test_status_invalid_for_type_is_refused(data: st.DataObject) -> None:
    ttype = data.draw(st.sampled_from(list(UnifiedTransactionType)))
    invalid = sorted({u.value for u in UnifiedTransactionStatus} - set(SPEC_REVERSE[ttype]))
    target = data.draw(st.sampled_from(invalid))
    with pytest.raises(InvalidStatusError) as info:
        mapper.to_legacy(ttype, target)
    assert ttype.value in str(info.value) and target in str(info.value)


def test_otp_pending_is_invalid_for_escrow() -> None:
    with pytest.raises(InvalidStatusError, match="ESCROW"):
        mapper.to_legacy(UnifiedTransactionType.ESCROW, "OTP_PENDING")


# --- the SQL generated from the tables agrees with the Python mapper ------------------


@pytest.fixture(scope="module")
def sqlite_conn():  # type: ignore[no-untyped-def]
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE v (ls TEXT, us TEXT)")
        yield conn
    engine.dispose()


def _pairs(system: LegacySystemType) -> list[tuple[str | None, str | None]]:
    legacy = [*SPEC_FORWARD[system], "pending", "BOGUS", None]
    unified_values: list[str | None] = [u.value for u in UnifiedTransactionStatus]
    return [(ls, us) for ls in legacy for us in [*unified_values, None]]


@pytest.mark.parametrize("system", list(LegacySystemType))
def test_sql_forward_and_compatible_agree_with_python(
    sqlite_conn: sa.Connection, system: LegacySystemType
) -> None:
    t = sa.table("v", sa.column("ls"), sa.column("us"))
    sqlite_conn.exec_driver_sql("DELETE FROM v")
    sqlite_conn.execute(sa.insert(t), [{"ls": a, "us": b} for a, b in _pairs(system)])
    rows = sqlite_conn.execute(
        sa.select(
            t.c.ls,
            t.c.us,
            forward_case(system, t.c.ls),
            compatible_clause(system, t.c.ls, t.c.us),
            reverse_case(system.transaction_type, t.c.us),
        )
    ).all()
    assert len(rows) == len(_pairs(system))
    for ls, us, fwd, compatible, rev in rows:
        expected = mapper.try_to_unified(system, ls)
        assert fwd == (expected.value if expected else None), ls
        assert fwd == SPEC_FORWARD[system].get(ls) if ls is not None else fwd is None
        assert bool(compatible) == (
            ls is not None and us is not None and mapper.is_compatible(system, ls, us)
        ), (ls, us)
        assert rev == SPEC_REVERSE[system.transaction_type].get(us) if us else rev is None
