"""The backfill's throttle as both dashboards show it: running or waiting, and why.

Read from where ``backfill status`` reads it: the workers' rows
(:func:`unistatus.backfill.read_workers`) and the tuning in force
(:func:`unistatus.backfill.current_tuning`). :func:`throttle_view` is a pure function of
the two, so the dashboards and ``/api/v1/status`` say the same thing:

- ``state``: ``waiting`` while any worker alive holds back on health (the adapter's
  p95, replication lag, lock waits: the reading against its limit, since when),
  ``paused`` while every worker alive is paused on purpose, ``running`` while they copy,
  ``idle`` with no worker alive;
- the batch size now (mean of the workers alive' next batch) and the target batch
  duration it follows, the last batch's rows and duration;
- the rate limit (``max_rows_per_second``, the whole backfill's) and the seconds held
  back per reason (the rate limit's pacing included: a worker paced by the rate limit
  sleeps between batches, so it shows as running, with its held seconds growing).
"""

from __future__ import annotations

from typing import Any

from unistatus.backfill.activity import PAUSED, THROTTLED
from unistatus.backfill.health import REASONS, TRAFFIC, UNITS

__all__ = ["IDLE", "RUNNING", "WAITING", "throttle_view"]

IDLE = "idle"
RUNNING = "running"
WAITING = "waiting"


def throttle_view(
    workers: list[dict[str, Any]] | None, tuning: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The throttle's state from the workers' rows (finished ones too: their held
    seconds count) and the tuning (``current_tuning``); None if the rows are unknown."""
    if workers is None:
        return None
    alive = [w for w in workers if w["alive"]]
    held = [_held(w) for w in alive if w["state"] == THROTTLED and w["throttle"]["reason"]]
    # An extra worker waiting beside live traffic is the design, not a hold on health:
    # waiting is a worker held on health, or every worker held.
    on_health = [
        w
        for w in alive
        if w["state"] == THROTTLED and w["throttle"]["reason"] not in (None, TRAFFIC)
    ]
    if on_health or (held and all(w["state"] == THROTTLED for w in alive)):
        state = WAITING
    elif alive and all(w["state"] == PAUSED for w in alive):
        state = PAUSED
    else:
        state = RUNNING if alive else IDLE
    values = (tuning or {}).get("values") or {}
    latest = max(alive, key=lambda w: str(w["updated_at"]), default=None)
    seen = latest["readings"] if latest is not None else {}
    sizes = [int(w["batch_rows"]) for w in alive]
    lasts = [w for w in alive if w["last_batch_ms"] is not None]
    return {
        "state": state,
        "workers": len(alive),
        "waiting": held,
        "batch_rows": round(sum(sizes) / len(sizes)) if sizes else None,
        "target_batch_ms": seen.get("target_batch_ms", values.get("target_batch_ms")),
        "last_batch_rows": round(sum(int(w["last_batch_rows"] or 0) for w in lasts) / len(lasts))
        if lasts
        else None,
        "last_batch_ms": round(sum(float(w["last_batch_ms"]) for w in lasts) / len(lasts), 1)
        if lasts
        else None,
        "max_rows_per_second": seen.get("max_rows_per_second", values.get("max_rows_per_second")),
        "held_seconds": {
            reason: round(sum(float(w["throttled_seconds"].get(reason, 0.0)) for w in workers), 1)
            for reason in REASONS
        },
        "summary": _summary(state, held, len(alive)),
    }


def _held(worker: dict[str, Any]) -> dict[str, Any]:
    t = worker["throttle"]
    unit = UNITS.get(t["reason"], "")
    reading, limit = t["reading"], t["limit"]
    why = t["reason"]
    if reading is not None and limit is not None:
        why = f"{t['reason']} {reading:g} {unit} > {limit:g} {unit}".replace("  ", " ")
    return {
        "worker": worker["worker"],
        "reason": t["reason"],
        "reading": reading,
        "limit": limit,
        "unit": unit,
        "since": t["since"],
        "seconds": t["seconds"],
        "why": why,
    }


def _summary(state: str, held: list[dict[str, Any]], alive: int) -> str:
    if state == WAITING:
        reasons = sorted({h["why"] for h in held})
        return f"waiting ({len(held)} of {alive} workers): " + "; ".join(reasons)
    if state == PAUSED:
        return f"paused ({alive} workers): `unistatus backfill resume`"
    if state == RUNNING:
        return f"running ({alive} worker{'' if alive == 1 else 's'})"
    return "no backfill running"
