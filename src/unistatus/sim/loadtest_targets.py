"""The load test's verdict: pass or fail against the migration strategy's targets.

The strategy runs ``python scripts/load_test_dual_write.py --transactions=10000
--concurrent=50`` and expects an average response time under 200 ms, an error rate
under 0.1 % and a consistency rate over 99.9 %; its SLA adds p95 under 200 ms. The
latency and error-rate bounds are the phase gates' own
(:mod:`unistatus.migration.phases`), so a load test that passes here does not fail
the gate into phase 4 on the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unistatus.migration.phases import MAX_ERROR_RATE, MAX_P95_MS

__all__ = ["MIN_CONSISTENCY", "TargetResult", "judge"]

MIN_CONSISTENCY = 0.999  # > 99.9 % of the pairs the run touched agree


@dataclass(frozen=True)
class TargetResult:
    """One target: the measured value, the bound in words, and whether it was met
    (None: not applicable to this run, e.g. consistency outside a dual-write mode)."""

    name: str
    value: str
    target: str
    passed: bool | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "target": self.target,
            "passed": self.passed,
        }


def judge(
    latency_ms: dict[str, float], error_rate: float, consistency_rate: float | None
) -> list[TargetResult]:
    """Each target with the run's figures (``latency_ms`` has ``mean`` and ``p95``)."""
    return [
        TargetResult(
            "mean latency",
            f"{latency_ms['mean']:.1f} ms",
            f"< {MAX_P95_MS:.0f} ms",
            latency_ms["mean"] < MAX_P95_MS,
        ),
        TargetResult(
            "p95 latency",
            f"{latency_ms['p95']:.1f} ms",
            f"< {MAX_P95_MS:.0f} ms",
            latency_ms["p95"] < MAX_P95_MS,
        ),
        TargetResult(
            "error rate",
            f"{error_rate:.3%}",
            f"< {MAX_ERROR_RATE:.1%}",
            error_rate < MAX_ERROR_RATE,
        ),
        TargetResult(
            "consistency",
            "n/a (not a dual-write mode)"
            if consistency_rate is None
            else f"{consistency_rate:.3%}",
            f"> {MIN_CONSISTENCY:.1%}",
            None if consistency_rate is None else consistency_rate > MIN_CONSISTENCY,
        ),
    ]
