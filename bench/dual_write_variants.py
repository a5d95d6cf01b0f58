"""Where the dual-write overhead goes: ``update_status`` in DUAL_WRITE_LEGACY_PRIMARY on
schema and guard variants, against LEGACY_ONLY and a raw UPDATE, in one run (issue 12,
section 6).

Every target has a throwaway database of its own, set up as ``dual_write_overhead`` sets
one up and kept in one mode for the whole run (no mode switch, no state left stale by
another target): one database in LEGACY_ONLY for ``legacy_only`` and ``raw_update`` (on
rows of their own), and one in DUAL_WRITE_LEGACY_PRIMARY per variant (``--variants``,
``--list``), with the variant's DDL applied before any row exists and, for a statement
variant, the fast path's guarded dual write replaced on that database's adapter. Every
variant but ``shipped`` is the baseline ``r0010`` (the schema of revision 0010, both rows
locked ``FOR UPDATE``) with one change. Operations are interleaved one by one (one of
each target in turn, the order rotating per round), so all share the machine's load at
the scale of a millisecond. Per variant the report gives the p50, the Python CPU time
per operation (``thread_time``), the ratios to ``legacy_only`` (p50 over all operations,
and paired: per round, the medians divided, then the median over rounds), to
``raw_update``, and to ``r0010``'s dual write, and, from ``pg_stat_user_tables``, the
share of unified updates that were HOT. ``--explain N`` then runs N more operations of
each adapter target with its guarded write under ``EXPLAIN (ANALYZE, BUFFERS, WAL)``:
server execution time, WAL records and bytes, buffers touched per statement.

    .venv/bin/python bench/dual_write_variants.py --list
    .venv/bin/python bench/dual_write_variants.py                       # default set
    .venv/bin/python bench/dual_write_variants.py --variants r0010,shipped,hot_ff90 \
        --synchronous-commit off --explain 200 --json

``no_lock`` is a bound, not a candidate: without an explicit row lock a refused unified
guard would leave the legacy write in place (see tests/adapter/test_adapter_fast.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from _databases import throwaway_postgres
from _timing import latency_ms, loadavg, p50_ratio, paired_ratio, rotated, round_medians
from dual_write_overhead import Bench, setup

from unistatus.adapter.sql import HotStatements, stored_status
from unistatus.adapter.writes import HISTORY_KEYS
from unistatus.db.control import set_mode
from unistatus.db.prepared import Prepared
from unistatus.db.tables import status_history as H
from unistatus.db.tables import unified_transactions as U
from unistatus.domain.statuses import DualWriteMode, LegacySystemType

CASHOUT = LegacySystemType.CASHOUT
Build = Callable[[HotStatements, LegacySystemType], Any]


@dataclass(frozen=True)
class Variant:
    doc: str
    ddl: tuple[str, ...] = ()
    statement: Build | None = None  # replaces the fast path's guarded dual write
    after_seed: tuple[str, ...] = ()  # DDL once the rows exist (creates need the columns)


def _bind(name: str, type_: Any = None) -> Any:
    return sa.bindparam(name, type_=type_)


def guarded_dual(lock: str, history_keys: tuple[str, ...] = HISTORY_KEYS) -> Build:
    """The fast path's guarded dual write (``HotStatements.guarded_dual_write``) with
    ``lock``: ``both`` (as shipped: legacy and unified row FOR UPDATE, then both
    UPDATEs), ``legacy`` (legacy row FOR UPDATE; the unified UPDATE's own WHERE is the
    unified guard, then the legacy UPDATE), ``none`` (no explicit lock: legacy UPDATE,
    then unified UPDATE: UNSAFE, a refused unified guard leaves the legacy write)."""

    def build(hot: HotStatements, system: LegacySystemType) -> Any:
        lt = hot.legacy[system]
        src = hot._src_legacy_holds(lt)
        mode_ok = hot.locked_mode_of(system) == _bind("p_mode")  # this installation's function
        unified_guard = (
            U.c.id == _bind("p_utx_id"),
            U.c.legacy_system == system.value,
            U.c.legacy_id == _bind("p_legacy_id"),
            U.c.status == _bind("p_src_status"),
            U.c.legacy_status.is_not_distinct_from(_bind("p_src_unified_legacy", sa.String)),
            U.c.version == _bind("p_version"),
        )
        unified_values = {
            "status": _bind("p_status"),
            "legacy_status": _bind("p_legacy_status"),
            "version": U.c.version + 1,
            "updated_at": _bind("p_now", U.c.updated_at.type),
        }
        legacy_id = lt.id == _bind("p_legacy_id")
        if lock == "both":
            locked = (
                sa.select(lt.id)
                .join_from(lt.table, U, hot._unified_of(system, lt))
                .where(legacy_id, src, mode_ok, *unified_guard)
                .with_for_update()
                .cte("locked")
            )
            first = (
                sa.update(lt.table)
                .where(legacy_id, sa.exists(sa.select(locked)))
                .values(hot._legacy_values(lt))
                .returning(lt.id, stored_status(lt))
                .cte("legacy_write")
            )
            last = (
                sa.update(U)
                .where(U.c.id == _bind("p_utx_id"), sa.exists(sa.select(first)))
                .values(unified_values)
                .returning(U.c.id)
                .cte("unified_write")
            )
        elif lock == "legacy":
            locked = sa.select(lt.id).where(legacy_id, src, mode_ok).with_for_update().cte("locked")
            first = (
                sa.update(U)
                .where(*unified_guard, sa.exists(sa.select(locked)))
                .values(unified_values)
                .returning(U.c.id)
                .cte("unified_write")
            )
            last = (
                sa.update(lt.table)
                .where(legacy_id, sa.exists(sa.select(first)))
                .values(hot._legacy_values(lt))
                .returning(lt.id, stored_status(lt))
                .cte("legacy_write")
            )
        elif lock == "none":
            first = (
                sa.update(lt.table)
                .where(legacy_id, src, mode_ok)
                .values(hot._legacy_values(lt))
                .returning(lt.id, stored_status(lt))
                .cte("legacy_write")
            )
            last = (
                sa.update(U)
                .where(*unified_guard, sa.exists(sa.select(first)))
                .values(unified_values)
                .returning(U.c.id)
                .cte("unified_write")
            )
        else:
            raise ValueError(lock)
        history = (
            sa.insert(H)
            .from_select(
                [H.c[k] for k in history_keys],
                sa.select(*(_bind(f"h_{k}", H.c[k].type) for k in history_keys)).select_from(last),
            )
            .returning(H.c.id)
            .cte("history_write")
        )
        written = sa.select(sa.func.count()).select_from(history).scalar_subquery()
        # The status legacy stored, as the shipped statement returns it (adapter/held.py).
        legacy_write = first if lock in ("both", "none") else last
        stored = sa.select(legacy_write.c.stored).scalar_subquery()
        return (
            sa.select(written, lt.status, U.c.status, U.c.legacy_status, U.c.version, stored)
            .join_from(lt.table, U, hot._unified_of(system, lt))
            .where(legacy_id)
        )

    return build


# The schema as revision 0010 left it (0012 dropped these indexes and set fillfactor 90).
R0010 = (
    "CREATE INDEX IF NOT EXISTS ix_unified_updated_at ON unified_transactions (updated_at)",
    "CREATE INDEX IF NOT EXISTS ix_unified_status ON unified_transactions (status)",
    "CREATE INDEX IF NOT EXISTS ix_history_legacy"
    " ON unified_status_history (legacy_system, legacy_id)",
    "ALTER TABLE unified_transactions RESET (fillfactor)",
)
DROP_UNIFIED_INDEXES = ("DROP INDEX ix_unified_status", "DROP INDEX ix_unified_updated_at")
HOT_FF90 = (*DROP_UNIFIED_INDEXES, "ALTER TABLE unified_transactions SET (fillfactor = 90)")
LEAN_HISTORY_KEYS = tuple(k for k in HISTORY_KEYS if k not in ("legacy_system", "legacy_id"))
BASELINE = "r0010"
# Every variant but "shipped" starts from revision 0010's schema and statement (both rows
# locked) and changes one thing, or the few its name lists.
BOTH_LOCKED = guarded_dual("both")

VARIANTS_BY_NAME: dict[str, Variant] = {
    BASELINE: Variant(
        "the baseline: schema of revision 0010, both rows locked FOR UPDATE",
        R0010,
        BOTH_LOCKED,
    ),
    "shipped": Variant("as this code ships: revision 0012 and the legacy-row lock"),
    "hot": Variant(
        "r0010 without the unified status and updated_at indexes (HOT possible)",
        (*R0010, *DROP_UNIFIED_INDEXES),
        BOTH_LOCKED,
    ),
    "hot_ff90": Variant(
        "hot, and unified_transactions at fillfactor 90", (*R0010, *HOT_FF90), BOTH_LOCKED
    ),
    "brin_updated_at": Variant(
        "r0010, no status index, updated_at as a BRIN index (PostgreSQL 15 blocks HOT)",
        (
            *R0010,
            *DROP_UNIFIED_INDEXES,
            "CREATE INDEX ix_unified_updated_at ON unified_transactions USING brin (updated_at)",
        ),
        BOTH_LOCKED,
    ),
    "hist_one_index": Variant(
        "r0010, history without ix_history_legacy (transaction_id index only)",
        (*R0010, "DROP INDEX ix_history_legacy"),
        BOTH_LOCKED,
    ),
    "hist_no_index": Variant(
        "r0010, history with its primary key only (a bound: tx show needs transaction_id)",
        (*R0010, "DROP INDEX ix_history_legacy", "DROP INDEX ix_history_transaction"),
        BOTH_LOCKED,
    ),
    "hist_lean_row": Variant(
        "r0010, history without legacy_system/legacy_id (derivable from transaction_id)",
        R0010,
        guarded_dual("both", LEAN_HISTORY_KEYS),
        after_seed=(
            "ALTER TABLE unified_status_history DROP COLUMN legacy_system",
            "ALTER TABLE unified_status_history DROP COLUMN legacy_id",
        ),
    ),
    "lock_legacy": Variant(
        "r0010, guard: legacy row FOR UPDATE, the unified UPDATE's WHERE guards its row",
        R0010,
        guarded_dual("legacy"),
    ),
    "no_lock": Variant(
        "r0010, UNSAFE bound: no FOR UPDATE, the two UPDATEs' WHEREs only",
        R0010,
        guarded_dual("none"),
    ),
    "hot_ff90_hist_one": Variant(
        "the shipped schema (0012), both rows locked",
        (*R0010, *HOT_FF90, "DROP INDEX ix_history_legacy"),
        BOTH_LOCKED,
    ),
}


def apply_ddl(ddl: tuple[str, ...]) -> Callable[[sa.Engine], None]:
    def prepare(engine: sa.Engine) -> None:
        with engine.begin() as conn:
            for statement in ddl:
                conn.exec_driver_sql(statement)

    return prepare


def install_statement(bench: Bench, build: Build) -> None:
    """Put the variant's statement where the fast path looks its guarded write up."""
    hot = bench.adapter.hot
    hot._state[1][("guarded_dual_write", CASHOUT)] = Prepared(build(hot, CASHOUT), bench.engine)


@dataclass
class Target:
    """One kind of operation on one database, in the mode it stays in for the run."""

    name: str
    bench: Bench
    ids: list[int]
    op: Callable[[int], None]
    latencies: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    per_round: list[float] = field(default_factory=list)
    _next: int = 0

    def step(self) -> None:
        legacy_id = self.ids[self._next % len(self.ids)]
        self._next += 1
        cpu = time.thread_time()
        started = time.perf_counter()
        self.op(legacy_id)
        self.latencies.append((time.perf_counter() - started) * 1000)
        self.cpu_ms.append((time.thread_time() - cpu) * 1000)


def set_and_check(bench: Bench, mode: DualWriteMode) -> None:
    set_mode(bench.engine, mode, reason="benchmark", actor="bench")
    if bench.adapter.modes.refresh() is not mode:
        raise SystemExit(f"mode did not switch to {mode}")


def table_stats(engine: sa.Engine) -> dict[str, dict[str, int]]:
    """Updates and HOT updates per table, as the statistics collector counted them."""
    time.sleep(1.2)  # backends report their counts at most once a second
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT relname, n_tup_upd, n_tup_hot_upd, n_tup_ins,"
            " pg_relation_size(relid), pg_indexes_size(relid) FROM pg_stat_user_tables"
            " WHERE relname IN ('cashouts', 'unified_transactions', 'unified_status_history')"
        ).all()
    return {
        r[0]: {"upd": r[1], "hot_upd": r[2], "ins": r[3], "heap_bytes": r[4], "index_bytes": r[5]}
        for r in rows
    }


class Explaining:
    """Stands in for a hot-path statement: runs it under EXPLAIN ANALYZE and keeps what
    the plan's top node reports; answers the fast path with the rows it wrote."""

    def __init__(self, prepared: Prepared, written_on: str) -> None:
        self.prepared = prepared
        self.written_on = written_on  # the relation whose write means "done"
        self.samples: list[dict[str, float]] = []

    def rows(self, conn: sa.Connection, values: Any) -> list[tuple[Any, ...]]:
        sql = "EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) " + self.prepared.compiled.string
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(sql, self.prepared.bind(values))
        doc = cursor.fetchone()[0][0]
        cursor.close()
        top = doc["Plan"]
        self.samples.append(
            {
                "exec_ms": doc["Execution Time"],
                "plan_ms": doc["Planning Time"],
                "wal_records": top.get("WAL Records", 0),
                "wal_bytes": top.get("WAL Bytes", 0),
                "wal_fpi": top.get("WAL FPI", 0),
                "dirtied": top.get("Shared Dirtied Blocks", 0),
                "hit": top.get("Shared Hit Blocks", 0),
            }
        )
        written = sum(n.get("Actual Rows", 0) for n in _nodes(top) if self._is_write(n))
        # Written: the fast path needs nothing else. Refused: no rows, the locked path.
        return [(1, None, None, None, None, None)] if written else []

    def _is_write(self, node: dict[str, Any]) -> bool:
        return node.get("Node Type") == "ModifyTable" and node.get("Relation Name") == (
            self.written_on
        )

    def summary(self) -> dict[str, float]:
        return {
            k: round(statistics.median(s[k] for s in self.samples), 4) for k in self.samples[0]
        } | {"statements": len(self.samples)}


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def explain(target: Target, name: str, written_on: str, ops: int) -> dict[str, float]:
    """``ops`` more operations of ``target``, its guarded write explained each time."""
    cache = target.bench.adapter.hot._state[1]
    original = cache[(name, CASHOUT)]
    explaining = Explaining(original, written_on)
    cache[(name, CASHOUT)] = explaining  # type: ignore[assignment]
    try:
        for _ in range(ops):
            target.op(target.ids[target._next % len(target.ids)])
            target._next += 1
    finally:
        cache[(name, CASHOUT)] = original
    return explaining.summary()


LEGACY_TARGETS = ("legacy_only", "raw_update")


def build_targets(
    stack: ExitStack, names: list[str], rows: int, synchronous_commit: str
) -> list[Target]:
    """One database in LEGACY_ONLY for ``legacy_only`` and ``raw_update`` (each on rows of
    its own), and one database per variant in DUAL_WRITE_LEGACY_PRIMARY."""

    def database(label: str, ddl: tuple[str, ...], n: int) -> Bench:
        url = stack.enter_context(throwaway_postgres(label=f"bench_var_{label[:12]}"))
        bench = setup(url, n, 1, synchronous_commit, prepare=apply_ddl(ddl))
        stack.callback(bench.engine.dispose)
        stack.callback(bench.adapter.close)
        return bench

    legacy = database("legacy", (), 2 * rows)
    set_and_check(legacy, DualWriteMode.LEGACY_ONLY)
    targets = [
        Target("legacy_only", legacy, legacy.ids[:rows], legacy.adapter_op()),
        Target("raw_update", legacy, legacy.ids[rows:], legacy.raw_op()),
    ]
    for name in names:
        variant = VARIANTS_BY_NAME[name]
        bench = database(name, variant.ddl, rows)
        apply_ddl(variant.after_seed)(bench.engine)
        if variant.statement is not None:
            install_statement(bench, variant.statement)
        set_and_check(bench, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY)
        targets.append(Target(name, bench, bench.ids, bench.adapter_op()))
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variants",
        default="r0010,shipped,hot_ff90,hist_one_index,lock_legacy",
        help="comma-separated, see --list (r0010, the baseline, is always run)",
    )
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    parser.add_argument("--rows", type=int, default=200, help="cashouts per target (default 200)")
    parser.add_argument(
        "--ops", type=int, default=300, help="operations per target per round (default 300)"
    )
    parser.add_argument("--rounds", type=int, default=15, help="rounds (default 15)")
    parser.add_argument("--synchronous-commit", choices=["on", "off"], default="on")
    parser.add_argument("--explain", type=int, default=0, help="explained ops per target")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.list:
        for name, v in VARIANTS_BY_NAME.items():
            print(f"{name:<26} {v.doc}")
        return 0
    names = [n for n in args.variants.split(",") if n]
    unknown = sorted(set(names) - set(VARIANTS_BY_NAME))
    if unknown:
        parser.error(f"unknown variants {unknown}; --list shows them")
    if BASELINE not in names:
        names.insert(0, BASELINE)

    load_before = loadavg()
    with ExitStack() as stack:
        targets = build_targets(stack, names, args.rows, args.synchronous_commit)
        for t in targets:  # warm-up: pools, prepared statements, plans
            for _ in range(max(10, args.ops // 5)):
                t.step()
            t.latencies.clear()
            t.cpu_ms.clear()
        for r in range(args.rounds):
            order = rotated(targets, r)
            first = {t.name: len(t.latencies) for t in order}
            for _ in range(args.ops):
                for t in order:
                    t.step()
            for t in order:
                t.per_round.append(statistics.median(t.latencies[first[t.name] :]))
        explained: dict[str, dict[str, Any]] = {}
        if args.explain:
            legacy = targets[0]
            explained["legacy_only"] = explain(
                legacy, "guarded_legacy_write", "cashouts", args.explain
            )
            for t in targets[2:]:
                explained[t.name] = explain(
                    t, "guarded_dual_write", "unified_status_history", args.explain
                )
        for t in targets:
            t.bench.adapter.close()
            t.bench.engine.dispose()
        stats = {t.name: table_stats(t.bench.engine) for t in targets[1:]}

    report = summarise(args, targets, stats, explained, load_before)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


def summarise(
    args: argparse.Namespace,
    targets: list[Target],
    stats: dict[str, Any],
    explained: dict[str, Any],
    load_before: str,
) -> dict[str, Any]:
    """Every target's latency, and each variant's ratios: p50 over all its operations,
    and paired (per round, the medians of operations interleaved one by one)."""
    by_name = {t.name: t for t in targets}
    per_round = {t.name: t.per_round for t in targets}
    pooled = {t.name: t.latencies for t in targets}
    out: dict[str, Any] = {
        "rows": args.rows,
        "ops_per_round": args.ops,
        "rounds": args.rounds,
        "synchronous_commit": args.synchronous_commit,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "latency_ms": latency_ms(pooled),
        "python_cpu_ms_p50": {t.name: round(statistics.median(t.cpu_ms), 4) for t in targets},
        "legacy_only_explain": explained.get("legacy_only", {}),
        "variants": {},
    }
    for t in targets[2:]:
        unified = stats[t.name].get("unified_transactions", {})
        out["variants"][t.name] = {
            "doc": VARIANTS_BY_NAME[t.name].doc,
            "dual / legacy_only (p50)": p50_ratio(pooled, t.name, "legacy_only"),
            "dual / legacy_only (paired)": paired_ratio(per_round, t.name, "legacy_only"),
            "dual / raw (paired)": paired_ratio(per_round, t.name, "raw_update"),
            "dual / baseline dual (paired)": paired_ratio(per_round, t.name, BASELINE),
            "unified_hot_share": round(
                unified.get("hot_upd", 0) / max(1, unified.get("upd", 0)), 3
            ),
            "tables": stats[t.name],
            "explain": explained.get(t.name, {}),
        }
    out["legacy_tables"] = stats.get("raw_update", {})
    out["round_medians_ms"] = round_medians(per_round)
    del by_name
    return out


def print_table(report: dict[str, Any]) -> None:
    print(
        f"rows={report['rows']} ops={report['ops_per_round']} rounds={report['rounds']} "
        f"synchronous_commit={report['synchronous_commit']} "
        f"load {report['loadavg_before']} -> {report['loadavg_after']}"
    )
    lat, cpu = report["latency_ms"], report["python_cpu_ms_p50"]
    for name in LEGACY_TARGETS:
        print(f"  {name:<26} p50 {lat[name]['p50']:.3f} ms, Python CPU {cpu[name]:.3f} ms")
    head = ("variant", "p50", "cpu", "d/l p50", "d/l pair", "d/raw", "d/base", "HOT")
    print("  {:<26} {:>6} {:>6} {:>8} {:>8} {:>6} {:>6} {:>5}".format(*head))
    for name, v in report["variants"].items():
        print(
            f"  {name:<26} {lat[name]['p50']:>6.3f} {cpu[name]:>6.3f} "
            f"{v['dual / legacy_only (p50)']:>8.3f} {v['dual / legacy_only (paired)']:>8.3f} "
            f"{v['dual / raw (paired)']:>6.3f} {v['dual / baseline dual (paired)']:>6.3f} "
            f"{v['unified_hot_share']:>5.2f}"
        )
    if report["legacy_only_explain"]:
        print("  EXPLAIN (ANALYZE, BUFFERS, WAL) of the guarded write, medians per statement:")
        print(
            "  {:<26} {:>8} {:>8} {:>8} {:>8}".format(
                "target", "exec ms", "WAL rec", "WAL B", "hit"
            )
        )
        rows = [("legacy_only", report["legacy_only_explain"])]
        rows += [(n, v["explain"]) for n, v in report["variants"].items()]
        for name, e in rows:
            print(
                f"  {name:<26} {e['exec_ms']:>8.3f} {e['wal_records']:>8.0f} "
                f"{e['wal_bytes']:>8.0f} {e['hit']:>8.0f}"
            )


if __name__ == "__main__":
    sys.exit(main())
