"""Batch sizing: toward the target duration, bounded, smoothed (no database)."""

from __future__ import annotations

import pytest

from unistatus.backfill.sizing import BAND, MAX_GROWTH, BatchSizer


def run(sizer: BatchSizer, cost_ms: float, overhead_ms: float, batches: int) -> list[int]:
    """Sizes chosen when a batch of n rows takes overhead + n * cost (ms)."""
    sizes = []
    for _ in range(batches):
        rows = sizer.rows
        sizes.append(rows)
        sizer.observe(rows, (overhead_ms + rows * cost_ms) / 1000.0)
    return sizes


def test_the_size_converges_to_batches_of_the_target_duration() -> None:
    sizer = BatchSizer(start=1000, target_ms=200.0, min_rows=100, max_rows=1_000_000)
    sizes = run(sizer, cost_ms=0.01, overhead_ms=5.0, batches=40)
    final = sizes[-1]
    took = 5.0 + final * 0.01
    assert BAND[0] * 200 <= took <= BAND[1] * 200
    assert sizes[-10:] == [final] * 10  # settled: no jitter inside the band
    # And from above: batches far too slow shrink to the target too.
    sizer = BatchSizer(start=200_000, target_ms=200.0, min_rows=100, max_rows=1_000_000)
    final = run(sizer, cost_ms=0.01, overhead_ms=5.0, batches=40)[-1]
    assert BAND[0] * 200 <= 5.0 + final * 0.01 <= BAND[1] * 200


def test_growth_is_capped_per_batch_and_a_slow_batch_shrinks_at_once() -> None:
    sizer = BatchSizer(start=1000, target_ms=200.0, min_rows=100, max_rows=1_000_000)
    sizes = run(sizer, cost_ms=0.0001, overhead_ms=0.0, batches=10)
    for before, after in zip(sizes, sizes[1:], strict=False):
        assert before < after <= before * MAX_GROWTH + 1
    # A batch 10x over the target: the next one is far smaller at once (not by 20%).
    sizer = BatchSizer(start=10_000, target_ms=200.0, min_rows=100, max_rows=1_000_000)
    sizer.observe(10_000, 2.0)
    assert sizer.rows <= 2_000


def test_one_outlier_batch_is_smoothed_not_followed() -> None:
    sizer = BatchSizer(start=10_000, target_ms=200.0, min_rows=100, max_rows=1_000_000)
    run(sizer, cost_ms=0.02, overhead_ms=0.0, batches=20)  # settled at ~10,000
    settled = sizer.rows
    assert 9_000 <= settled <= 11_000
    sizer.observe(settled, 10 * settled * 0.02 / 1000.0)  # one batch 10x slower
    # Followed blindly it would drop to a tenth; the moving average keeps most of it.
    assert sizer.rows > settled / 10 * 2
    run(sizer, cost_ms=0.02, overhead_ms=0.0, batches=20)
    assert 9_000 <= sizer.rows <= 11_000  # and it comes back


@pytest.mark.parametrize(("cost_ms", "bound"), [(0.000001, 5_000), (50.0, 300)])
def test_the_size_stays_within_its_bounds(cost_ms: float, bound: int) -> None:
    sizer = BatchSizer(start=1000, target_ms=200.0, min_rows=300, max_rows=5_000)
    sizes = run(sizer, cost_ms=cost_ms, overhead_ms=0.0, batches=60)
    assert all(300 <= s <= 5_000 for s in sizes)
    assert sizes[-1] == bound


def test_a_zero_duration_batch_grows_by_the_cap_not_to_infinity() -> None:
    sizer = BatchSizer(start=1000, target_ms=200.0, min_rows=100, max_rows=100_000)
    sizer.observe(1000, 0.0)
    assert sizer.rows == 1200


def test_target_zero_is_fixed_and_retarget_moves_inside_new_bounds() -> None:
    sizer = BatchSizer(start=700, target_ms=0.0, min_rows=100, max_rows=100_000)
    assert run(sizer, cost_ms=1.0, overhead_ms=0.0, batches=5) == [700] * 5
    assert not sizer.adaptive and sizer.chunks(100) == 7
    sizer.retarget(200.0, 100, 100_000)  # `backfill tune --target-batch-ms 200`
    assert run(sizer, cost_ms=0.0001, overhead_ms=0.0, batches=3) == [700, 840, 1008]
    sizer.retarget(200.0, 100, 500)  # `backfill tune --max-batch-rows 500`
    assert sizer.rows == 500
    sizer.retarget(0.0, 100, 500)  # back to fixed: the run's --batch-size
    assert sizer.rows == 700


def test_chunks_per_batch_round_to_whole_chunks_and_never_zero() -> None:
    sizer = BatchSizer(start=1000, target_ms=200.0, min_rows=10, max_rows=100_000)
    assert sizer.chunks(100) == 10 and sizer.chunks(1000) == 1 and sizer.chunks(5000) == 1
    assert sizer.chunks(0) == 1000


def test_a_new_table_starts_from_what_the_last_one_learned() -> None:
    first = BatchSizer(start=1000, target_ms=200.0, min_rows=100, max_rows=1_000_000)
    run(first, cost_ms=0.01, overhead_ms=0.0, batches=40)  # settled near 20,000
    fresh = BatchSizer(start=1000, target_ms=200.0, min_rows=100, max_rows=50_000)
    fresh.learn_from(first)
    assert fresh.rows == first.rows and fresh.ms_per_row == first.ms_per_row
    # Within its own bounds; and a table 10x costlier shrinks at its first batch.
    capped = BatchSizer(start=1000, target_ms=200.0, min_rows=100, max_rows=5_000)
    capped.learn_from(first)
    assert capped.rows == 5_000
    fresh.observe(fresh.rows, fresh.rows * 0.1 / 1000.0)
    assert fresh.rows < first.rows / 2
    # Only before its own first batch, only when adaptive, only from a sizer that learned.
    fresh_rows = fresh.rows
    fresh.learn_from(first)
    assert fresh.rows == fresh_rows
    fixed = BatchSizer(start=700, target_ms=0.0, min_rows=100, max_rows=100_000)
    fixed.learn_from(first)
    assert fixed.rows == 700 and fixed.ms_per_row is None
    blank = BatchSizer(start=1000, target_ms=200.0, min_rows=100, max_rows=100_000)
    blank.learn_from(BatchSizer(start=3000, target_ms=200.0, min_rows=100, max_rows=100_000))
    assert blank.rows == 1000
