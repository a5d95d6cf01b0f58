"""What the interleaved latency benches share: per-variant figures and paired ratios."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, for the report (a shared machine's noise)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def rotated(items: Sequence[T], r: int) -> list[T]:
    """Round ``r``'s order: the variants rotated, so each runs first in turn (drift on a
    shared machine then hits all of them alike)."""
    shift = r % len(items)
    return [*items[shift:], *items[:shift]]


def interleaved_rounds(
    run: Callable[[str, int], list[float]],
    variants: Sequence[str],
    rounds: int,
    ops: int,
    after_round: Callable[[], None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """``rounds`` rounds of ``ops`` operations of each variant, in rotated order:
    (per-round median of each variant, all its latencies pooled)."""
    per_round: dict[str, list[float]] = {v: [] for v in variants}
    pooled: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(rounds):
        for variant in rotated(variants, r):
            latencies = run(variant, ops)
            per_round[variant].append(statistics.median(latencies))
            pooled[variant].extend(latencies)
        if after_round is not None:
            after_round()
    return per_round, pooled


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_ms(pooled: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """p50, p90 and mean of every variant, over all its operations."""
    return {
        v: {
            "p50": round(statistics.median(values), 4),
            "p90": round(quantile(values, 0.9), 4),
            "mean": round(statistics.fmean(values), 4),
        }
        for v, values in pooled.items()
    }


def p50_ratio(pooled: dict[str, list[float]], a: str, b: str) -> float:
    return round(statistics.median(pooled[a]) / statistics.median(pooled[b]), 3)


def paired_ratio(per_round: dict[str, list[float]], a: str, b: str) -> float:
    """The medians of adjacent blocks of the same round (same machine load) divided,
    then the median over rounds."""
    ratios = (x / y for x, y in zip(per_round[a], per_round[b], strict=True))
    return round(statistics.median(ratios), 3)


def round_medians(per_round: dict[str, list[float]]) -> dict[str, list[float]]:
    return {v: [round(x, 4) for x in medians] for v, medians in per_round.items()}


def print_report(report: dict[str, Any], variants: list[str] | tuple[str, ...]) -> None:
    """The latency table and the ratios, as the benches print them without --json."""
    print(f"  {'variant':<12} {'p50 ms':>8} {'p90 ms':>8} {'mean ms':>8}")
    for v in variants:
        st = report["latency_ms"][v]
        print(f"  {v:<12} {st['p50']:>8.3f} {st['p90']:>8.3f} {st['mean']:>8.3f}")
    for name, value in report["ratios"].items():
        print(f"  {name:<34} {value:.3f}")
