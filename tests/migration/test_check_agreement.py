"""The bulk check and the adapter's single-entity ``check_consistency`` agree on every case.

Both implement the spec's rule (compatible status, same user, exact amount, same
currency): the check as SQL flags, the adapter through ``consistency.compare``. Every
kind and the combinations a row can show are built by hand, in every system, on both
backends; for each entity the set of kinds must be identical, and the totals must match
the adapter entity by entity.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from support.check_data import T1, insert_case, tables
from unistatus.adapter.core import DualWriteAdapter
from unistatus.domain.ids import SYSTEM_DIGIT, derive_utx_id
from unistatus.domain.mapping import CANONICAL_REVERSE, FORWARD, compatible_pairs
from unistatus.domain.statuses import LegacySystemType, UnifiedTransactionStatus
from unistatus.migration.check import run_check


@dataclass(frozen=True)
class Case:
    name: str
    legacy: dict[str, Any] | None
    unified: dict[str, Any] | None
    kinds: frozenset[str]
    born_unified: bool = False


def _incompatible(system: LegacySystemType, legacy_status: str) -> str:
    """A status valid for the type that is not compatible with ``legacy_status``."""
    pairs = set(compatible_pairs(system))
    for unified in CANONICAL_REVERSE[system.transaction_type]:
        if (legacy_status, unified.value) not in pairs:
            return unified.value
    raise AssertionError("every status compatible?")


def cases(system: LegacySystemType) -> list[Case]:
    ls, us = next(iter(FORWARD[system].items()))
    ls, us = str(ls), us.value
    bad = _incompatible(system, ls)
    refinements = [
        (legacy, unified.value)
        for unified, legacy in CANONICAL_REVERSE[system.transaction_type].items()
        if FORWARD[system][legacy] is not unified
    ]
    k = frozenset
    out = [
        Case("consistent", {"status": ls}, {"status": us}, k()),
        Case(
            "amount scale differs only",
            {"status": ls, "amount": Decimal("10.5")},
            {"status": us, "amount": Decimal("10.50000000")},
            k(),
        ),
        Case("missing", {"status": ls}, None, k({"missing_unified"})),
        Case(
            "missing, unmappable",
            {"status": "bogus"},
            None,
            k({"missing_unified", "unmappable_legacy"}),
        ),
        Case(
            "missing, NULL status",
            {"status": None},
            None,
            k({"missing_unified", "unmappable_legacy"}),
        ),
        Case("orphan", None, {"status": us}, k({"orphan_unified"})),
        Case("born unified", None, {"status": us}, k(), born_unified=True),
        Case("status", {"status": ls}, {"status": bad}, k({"status_mismatch"})),
        Case(
            "status invalid for type",
            {"status": ls},
            {"status": "NOT_A_STATUS"},
            k({"status_mismatch"}),
        ),
        Case("user", {"status": ls}, {"status": us, "user_id": 8}, k({"field_mismatch"})),
        Case(
            "amount by 1e-8",
            {"status": ls},
            {"status": us, "amount": Decimal("10.50000001")},
            k({"field_mismatch"}),
        ),
        Case("currency", {"status": ls}, {"status": us, "currency": "EUR"}, k({"field_mismatch"})),
        Case(
            "every field",
            {"status": ls},
            {"status": us, "user_id": 9, "amount": Decimal("1"), "currency": "EUR"},
            k({"field_mismatch"}),
        ),
        Case(
            "status and fields",
            {"status": ls},
            {"status": bad, "amount": Decimal("11")},
            k({"status_mismatch", "field_mismatch"}),
        ),
        Case(
            "unmappable, unified present",
            {"status": ls.lower()},
            {"status": us},
            k({"unmappable_legacy"}),
        ),
        Case(
            "NULL status, unified present",
            {"status": None},
            {"status": us},
            k({"unmappable_legacy"}),
        ),
        Case(
            "unmappable and fields",
            {"status": "bogus"},
            {"status": us, "user_id": 8},
            k({"unmappable_legacy", "field_mismatch"}),
        ),
        Case("newer unified, consistent", {"status": ls}, {"status": us, "updated_at": T1}, k()),
        Case(
            "stale legacy_status",
            {"status": ls},
            {"status": us, "legacy_status": "STALE"},
            k({"legacy_status_drift"}),
        ),
        Case(
            "no legacy_status",
            {"status": ls},
            {"status": us, "legacy_status": None},
            k({"legacy_status_drift"}),
        ),
        Case(
            "stale legacy_status and fields",
            {"status": ls},
            {"status": us, "legacy_status": "STALE", "currency": "EUR"},
            k({"legacy_status_drift", "field_mismatch"}),
        ),
        Case(
            "status mismatch is not also drift",
            {"status": ls},
            {"status": bad, "legacy_status": "STALE"},
            k({"status_mismatch"}),
        ),
        Case(
            "unmappable is not also drift",
            {"status": "bogus"},
            {"status": us, "legacy_status": "STALE"},
            k({"unmappable_legacy"}),
        ),
    ]
    for legacy, unified in refinements:
        out.append(
            Case(f"refinement {legacy}/{unified}", {"status": legacy}, {"status": unified}, k())
        )
    return out


def test_every_kind_and_combination_is_covered() -> None:
    kinds = set().union(*(c.kinds for s in LegacySystemType for c in cases(s)))
    assert kinds == {
        "missing_unified",
        "orphan_unified",
        "status_mismatch",
        "field_mismatch",
        "unmappable_legacy",
        "legacy_status_drift",
    }
    escrow = {c.name for c in cases(LegacySystemType.ESCROW)}
    assert "refinement ACTIVE/RELEASE_PENDING" in escrow


def test_bulk_check_and_adapter_agree_on_every_case(db: Any) -> None:
    legacy_tables = tables(db.engine, db.settings)
    entity_ids: dict[tuple[str, int], tuple[str, Case]] = {}
    with db.engine.begin() as conn:
        for system, lt in legacy_tables.items():
            for n, case in enumerate(cases(system), start=1):
                legacy_id = 100 + n
                born = f"UTX9{SYSTEM_DIGIT[system]}{legacy_id:013d}" if case.born_unified else None
                insert_case(conn, lt, legacy_id, case.legacy, case.unified, born_unified_id=born)
                if case.born_unified:
                    entity = str(born)
                elif case.legacy is None:
                    entity = derive_utx_id(system, legacy_id)
                else:
                    entity = f"{system.value.lower()}:{legacy_id}"
                entity_ids[(system.value, legacy_id)] = (entity, case)

    report = run_check(db.engine, db.settings, examples=10_000, chunk=5)
    bulk = {(e["system"], e["legacy_id"]): frozenset(e["kinds"]) for e in report.examples}
    adapter = DualWriteAdapter(db.engine, settings=db.settings)
    counted = 0
    for (system, legacy_id), (entity, case) in entity_ids.items():
        single = adapter.check_consistency(entity, system)
        single_kinds = frozenset(i["kind"] for i in single["inconsistencies"])
        assert single_kinds == case.kinds, (system, case.name, single)
        assert bulk.get((system, legacy_id), frozenset()) == case.kinds, (system, case.name)
        assert single["consistent"] == (not case.kinds)
        counted += 0 if case.born_unified else 1
    # Every checked entity counted once; rows born unified are outside the diff.
    assert report.total == counted
    assert report.consistent == sum(
        1 for entity, case in entity_ids.values() if not case.kinds and not case.born_unified
    )
    for kind in report.inconsistencies:
        assert report.inconsistencies[kind] == sum(
            1 for _, case in entity_ids.values() if kind in case.kinds
        )
    # The examples' details come from the same Python rule: same kinds again.
    for example in report.examples:
        assert {d["kind"] for d in example["details"]} == set(example["kinds"])


@pytest.mark.parametrize("system", list(LegacySystemType))
def test_incompatible_helper(system: LegacySystemType) -> None:
    ls = str(next(iter(FORWARD[system])))
    assert (ls, _incompatible(system, ls)) not in set(compatible_pairs(system))


def test_random_pairs_agree_with_the_python_rule(db: Any) -> None:
    """Hundreds of random pairs per system: SQL kinds == consistency.compare's kinds."""
    from unistatus.domain import consistency

    rnd = random.Random(20261123)
    legacy_tables = tables(db.engine, db.settings)
    expected: dict[tuple[str, int], frozenset[str]] = {}
    with db.engine.begin() as conn:
        for system, lt in legacy_tables.items():
            legacy_values = [str(s) for s in FORWARD[system]] + ["bogus", "pending", None]
            unified_values = [u.value for u in UnifiedTransactionStatus] + ["NOPE"]
            for legacy_id in range(1, 201):
                shape = rnd.random()
                legacy = (
                    None
                    if shape < 0.1
                    else {
                        "status": rnd.choice(legacy_values),
                        "user_id": rnd.choice([7, 7, 7, 8]),
                        "amount": rnd.choice(
                            [Decimal("10.5"), Decimal("10.5"), Decimal("10.50000001")]
                        ),
                        "currency": rnd.choice(["USD", "USD", "EUR"]),
                    }
                )
                unified = (
                    None
                    if 0.1 <= shape < 0.2
                    else {
                        "status": rnd.choice(unified_values),
                        "user_id": rnd.choice([7, 7, 7, 9]),
                        "amount": rnd.choice([Decimal("10.5"), Decimal("10.50000000")]),
                        "currency": rnd.choice(["USD", "USD", "GBP"]),
                    }
                )
                if unified is not None and legacy is not None and rnd.random() < 0.3:
                    # A stale or missing image of the legacy status, now and then.
                    unified["legacy_status"] = rnd.choice(legacy_values)
                if legacy is None and unified is None:
                    continue
                insert_case(conn, lt, legacy_id, legacy, unified)
                lrow = {"id": legacy_id, **legacy} if legacy else None
                image = legacy["status"] if legacy else None  # insert_case's default
                urow = (
                    {"id": "x", "legacy_id": legacy_id, "legacy_status": image, **unified}
                    if unified
                    else None
                )
                kinds = frozenset(i.kind.value for i in consistency.compare(system, lrow, urow))
                expected[(system.value, legacy_id)] = kinds
    report = run_check(db.engine, db.settings, examples=10_000, chunk=37, store=False)
    bulk = {(e["system"], e["legacy_id"]): frozenset(e["kinds"]) for e in report.examples}
    assert report.total == len(expected)
    mismatches = {
        key: (kinds, bulk.get(key, frozenset()))
        for key, kinds in expected.items()
        if bulk.get(key, frozenset()) != kinds
    }
    assert not mismatches
    assert report.consistent == sum(1 for kinds in expected.values() if not kinds)
