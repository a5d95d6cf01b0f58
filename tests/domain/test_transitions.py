"""Transition rules against the spec's tables, restated here independently of the code."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unistatus.domain.mapping import LegacyStatusMapper
from unistatus.domain.statuses import UnifiedTransactionStatus, UnifiedTransactionType
from unistatus.domain.transitions import TransitionKind, TransitionRules
from unistatus.errors import InputError, InvalidStatusError, InvalidTransitionError

T = UnifiedTransactionType


def _t(text: str) -> dict[str, set[str]]:
    rows = {}
    for line in text.strip().splitlines():
        src, _, targets = line.partition("|")
        rows[src.strip()] = {x.strip() for x in targets.split(",")}
    return rows


# Copied from docs/status-model.md, "Transitions".
SPEC: dict[T, dict[str, set[str]]] = {
    T.WALLET_CASHOUT: _t(
        """
        PENDING | OTP_PENDING, AWAITING_APPROVAL, ADMIN_PENDING, FUNDS_HELD, PROCESSING, FAILED, CANCELLED, EXPIRED
        OTP_PENDING | AWAITING_APPROVAL, ADMIN_PENDING, FUNDS_HELD, PROCESSING, FAILED, CANCELLED, EXPIRED
        AWAITING_APPROVAL | OTP_PENDING, ADMIN_PENDING, FUNDS_HELD, PROCESSING, FAILED, CANCELLED, EXPIRED
        ADMIN_PENDING | FUNDS_HELD, PROCESSING, FAILED, CANCELLED, EXPIRED
        FUNDS_HELD | PROCESSING, FAILED, CANCELLED
        PROCESSING | AWAITING_RESPONSE, SUCCESS, FAILED
        AWAITING_RESPONSE | PROCESSING, SUCCESS, FAILED
        """  # noqa: E501
    ),
    T.ESCROW: _t(
        """
        PENDING | AWAITING_PAYMENT, AWAITING_APPROVAL, CANCELLED, EXPIRED
        AWAITING_APPROVAL | AWAITING_PAYMENT, PAYMENT_CONFIRMED, FUNDS_HELD, CANCELLED, EXPIRED
        AWAITING_PAYMENT | PARTIAL_PAYMENT, PAYMENT_CONFIRMED, AWAITING_APPROVAL, CANCELLED, EXPIRED
        PARTIAL_PAYMENT | AWAITING_PAYMENT, PAYMENT_CONFIRMED, CANCELLED, EXPIRED
        PAYMENT_CONFIRMED | AWAITING_APPROVAL, FUNDS_HELD, CANCELLED
        FUNDS_HELD | RELEASE_PENDING, SUCCESS, DISPUTED, CANCELLED
        RELEASE_PENDING | SUCCESS, DISPUTED, FUNDS_HELD
        DISPUTED | FUNDS_HELD, RELEASE_PENDING, SUCCESS, CANCELLED
        """
    ),
    T.EXCHANGE: _t(
        """
        PENDING | AWAITING_PAYMENT, ADMIN_PENDING, FAILED, CANCELLED
        AWAITING_PAYMENT | PAYMENT_CONFIRMED, FAILED, CANCELLED
        PAYMENT_CONFIRMED | ADMIN_PENDING, PROCESSING, FAILED, CANCELLED
        ADMIN_PENDING | PROCESSING, FAILED, CANCELLED
        PROCESSING | SUCCESS, FAILED
        """
    ),
}
FINAL = {"SUCCESS", "FAILED", "CANCELLED", "EXPIRED"}

rules = TransitionRules()
mapper = LegacyStatusMapper()
types = st.sampled_from(list(T))


def valid(ttype: T) -> list[str]:
    return sorted(s.value for s in mapper.valid_statuses(ttype))


@st.composite
def pairs(draw: st.DrawFn) -> tuple[T, str, str]:
    ttype = draw(types)
    return ttype, draw(st.sampled_from(valid(ttype))), draw(st.sampled_from(valid(ttype)))


@pytest.mark.parametrize("ttype", list(T))
def test_transitions_exactly_as_listed(ttype: T) -> None:
    assert rules.graph(ttype) == {k: sorted(v) for k, v in SPEC[ttype].items()}
    for src in valid(ttype):
        assert {s.value for s in rules.allowed(ttype, src)} == SPEC[ttype].get(src, set())


@pytest.mark.parametrize("ttype", list(T))
def test_final_statuses_have_no_exits(ttype: T) -> None:
    for final in FINAL & set(valid(ttype)):
        assert rules.allowed(ttype, final) == frozenset()
        assert UnifiedTransactionStatus(final).is_final


@pytest.mark.parametrize("ttype", list(T))
def test_allowed_from_is_the_inverse(ttype: T) -> None:
    for dst in valid(ttype):
        expected = {src for src, targets in SPEC[ttype].items() if dst in targets}
        assert {s.value for s in rules.allowed_from(ttype, dst)} == expected


@given(pairs())
def test_check_matches_the_table(case: tuple[T, str, str]) -> None:
    ttype, src, dst = case
    if src == dst:
        assert rules.check(ttype, src, dst) is TransitionKind.NOOP
    elif dst in SPEC[ttype].get(src, set()):
        assert rules.check(ttype, src, dst) is TransitionKind.ALLOWED
    else:
        with pytest.raises(InvalidTransitionError) as info:
            rules.check(ttype, src, dst)
        err = info.value
        assert (err.transaction_type, err.from_status, err.to_status) == (ttype.value, src, dst)
        assert err.allowed == sorted(SPEC[ttype].get(src, set()))
        text = str(err)
        assert ttype.value in text and src in text and dst in text
        for a in err.allowed:
            assert a in text
        if not err.allowed:
            assert "final" in text


@given(pairs(), st.text(min_size=1).filter(lambda s: s.strip() != ""))
def test_override_needs_a_reason(case: tuple[T, str, str], reason: str) -> None:
    ttype, src, dst = case
    if src == dst or dst in SPEC[ttype].get(src, set()):
        return
    for empty in (None, "", "   "):
        with pytest.raises(InputError, match="reason"):
            rules.check(ttype, src, dst, force=True, reason=empty)
    assert rules.check(ttype, src, dst, force=True, reason=reason) is TransitionKind.OVERRIDE


@given(pairs())
def test_same_status_is_noop_even_when_forced(case: tuple[T, str, str]) -> None:
    ttype, src, _ = case
    assert rules.check(ttype, src, src) is TransitionKind.NOOP
    assert rules.check(ttype, src, src, force=True, reason="x") is TransitionKind.NOOP


@pytest.mark.parametrize("src", ["PENDING", "FUNDS_HELD", "SUCCESS"])
def test_otp_pending_invalid_for_escrow_even_forced(src: str) -> None:
    with pytest.raises(InvalidStatusError, match="OTP_PENDING"):
        rules.check(T.ESCROW, src, "OTP_PENDING", force=True, reason="admin")
    with pytest.raises(InvalidStatusError):
        rules.check(T.ESCROW, "OTP_PENDING", src, force=True, reason="admin")


@given(types, st.sampled_from([u.value for u in UnifiedTransactionStatus]))
def test_status_invalid_for_type_refused_even_forced(ttype: T, status: str) -> None:
    if status in valid(ttype):
        return
    with pytest.raises(InvalidStatusError):
        rules.check(ttype, valid(ttype)[0], status, force=True, reason="admin")


def test_unknown_and_lower_case_targets_refused() -> None:
    for bad in ("pending", "BOGUS", ""):
        with pytest.raises(InvalidStatusError):
            rules.check(T.WALLET_CASHOUT, "PENDING", bad)


@pytest.mark.parametrize("ttype", list(T), ids=lambda t: t.value)
def test_the_rules_in_sql_give_the_same_answers(ttype: T) -> None:
    """allowed_clause (the capture triggers' judge) agrees with TransitionRules.check on
    every pair of statuses valid for the type."""
    import sqlalchemy as sa

    from unistatus.domain.transitions import allowed_clause

    valid = sorted(s.value for s in LegacyStatusMapper().valid_statuses(ttype))
    pairs = [(a, b) for a in valid for b in valid]
    rows = sa.union_all(
        *(sa.select(sa.literal(a).label("src"), sa.literal(b).label("dst")) for a, b in pairs)
    ).subquery("pairs")
    q = sa.select(rows.c.src, rows.c.dst, allowed_clause(ttype, rows.c.src, rows.c.dst))
    with sa.create_engine("sqlite://").connect() as conn:
        in_sql = {(a, b): bool(ok) for a, b, ok in conn.execute(q)}
    rules = TransitionRules()

    def allowed(a: str, b: str) -> bool:
        try:
            rules.check(ttype, a, b)
        except InvalidTransitionError:
            return False
        return True

    assert in_sql == {(a, b): allowed(a, b) for a, b in pairs}
