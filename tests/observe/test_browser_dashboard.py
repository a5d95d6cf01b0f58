"""The web dashboard in a real browser (Debian's chromium, driven by Playwright).

Never ``playwright install``: the browser is the system's /usr/bin/chromium. Without it
the test skips with the reason, except under CI=true, where it fails.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from support.phases import to_phase
from support.serving import serving
from support.stats_data import record_latency, seed_pairs
from unistatus.adapter.core import DualWriteAdapter
from unistatus.api.service import create_app
from unistatus.backfill import run_backfill
from unistatus.backfill.activity import Activity
from unistatus.backfill.health import LOCKS, Decision, Readings
from unistatus.clock import utcnow
from unistatus.config import AutoResponses
from unistatus.db.control import set_mode
from unistatus.db.dialect import ops_for
from unistatus.domain.statuses import DualWriteMode, LegacySystemType, UnifiedTransactionType
from unistatus.migration.check import run_check
from unistatus.observe import alerts
from unistatus.observe.notify import Notifier

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def test_dashboard_shows_the_migration_and_refreshes(sqlite_db: Any, browser: Any) -> None:
    db = sqlite_db
    seed_pairs(db.engine, 200, drift=3)  # 98.5%: a critical alert
    run_backfill(db.engine, db.settings, systems=[LegacySystemType.CASHOUT])
    run_check(db.engine, db.settings)
    set_mode(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, reason="phase 1")
    record_latency(db.engine, DualWriteMode.DUAL_WRITE_LEGACY_PRIMARY, 40.0, 30)
    settings = db.settings.model_copy(
        update={
            "auto_responses": AutoResponses(
                rollback_on_critical_consistency=False, repair_on_consistency_warning=False
            )
        }
    )
    alerts.evaluate(db.engine, settings, notifier=Notifier())
    with serving(create_app(settings, db.engine)) as base:
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        script_errors: list[str] = []
        page.on("pageerror", lambda exc: script_errors.append(str(exc)))
        page.goto(base + "/")
        page.wait_for_function(
            "document.getElementById('mode').textContent.includes('DUAL_WRITE')", timeout=10_000
        )
        assert page.inner_text("#mode") == "mode DUAL_WRITE_LEGACY_PRIMARY"
        assert page.inner_text("#phase").startswith("phase 0")
        assert page.inner_text("#consistency") == "98.500%"
        assert "bad" in (page.get_attribute("#consistency", "class") or "")
        assert page.inner_text("#coverage") == "100%"
        assert page.inner_text("#validation") == "failing (3)"
        assert re.fullmatch(r"\d+\.\d ms", page.inner_text("#p95"))
        assert page.inner_text("#error-rate") == "0.00%"
        systems = page.locator("#systems [role=progressbar]")
        assert systems.count() == 3
        labels = [systems.nth(i).get_attribute("aria-label") or "" for i in range(3)]
        assert [label.split(" ")[0] for label in labels] == ["CASHOUT", "ESCROW", "EXCHANGE"]
        assert systems.nth(0).get_attribute("aria-valuenow") == "100"  # backfilled
        assert systems.nth(0).inner_text().split()[-1] == "100%"
        assert "not_started" in labels[1]
        phases = page.locator("#phases [role=progressbar]")
        assert phases.count() == 4
        # Phase 0: phase 1 is not started, whatever gates into it pass.
        assert phases.nth(0).get_attribute("aria-valuenow") == "0"
        # The bar is drawn as wide as its number says (a person sees the fill).
        first = systems.nth(0)
        track = first.locator(".track").bounding_box()
        fill = first.locator(".fill").bounding_box()
        assert track and fill and abs(fill["width"] - track["width"]) < 1
        empty = phases.nth(2).locator(".fill").bounding_box()
        assert empty is not None and empty["width"] == 0
        assert "CRITICAL consistency_critical" in page.inner_text("#alerts")
        assert page.inner_text("#health") == "degraded"
        # The last hour, drawn as inline SVG: the step with the recorded operations, the
        # check, the mode change marked on the time axis.
        page.wait_for_function(
            "document.querySelectorAll('#chart-p95 circle.point').length > 0", timeout=12_000
        )
        charts = ("p95", "error-rate", "throughput", "consistency")
        points = {c: page.locator(f"#chart-{c} circle.point").count() for c in charts}
        # Consistency: the check, and the monitor's round of continuous verification.
        assert points == {"p95": 1, "error-rate": 1, "throughput": 60, "consistency": 2}
        line = page.get_attribute("#chart-throughput path.line", "d") or ""
        assert line.count("L") == 59  # one unbroken line through the hour's 60 steps
        # Its scale tops at the one value, the p95 the figure above shows.
        top_label = f"{float(page.inner_text('#p95').split()[0]):.0f} ms"
        assert page.inner_text("#chart-p95").startswith(top_label + "\n0 ms")
        marks = page.locator("#chart-p95 .event.mode")
        assert marks.count() == 1 and marks.locator("text").text_content() == "DW-L"
        box = page.locator("#chart-p95 svg").bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 60
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # It refreshes itself: switch the mode behind its back and wait for it to show.
        set_mode(db.engine, DualWriteMode.DUAL_WRITE_UNIFIED_PRIMARY, reason="phase 3")
        page.wait_for_function(
            "document.getElementById('mode').textContent.includes('UNIFIED_PRIMARY')",
            timeout=12_000,
        )
        assert not page.is_visible("#replay-pending")  # not in phase 4

        # Phase 4: the changes a rollback would replay show, and count up.
        to_phase(db.engine, 4)
        DualWriteAdapter(db.engine, settings=settings).create_transaction(
            UnifiedTransactionType.EXCHANGE, 5, Decimal("12.5"), "USDT"
        )
        page.wait_for_function(
            "document.getElementById('replay-pending').textContent === '1 change'",
            timeout=12_000,
        )
        assert page.is_visible("#replay-pending")
        assert script_errors == []
        page.close()


def test_the_page_shows_why_the_backfill_waits(sqlite_db: Any, browser: Any) -> None:
    """The throttle drawn by the page's own script: waiting and why, the batch, its target."""
    db = sqlite_db
    held = Activity(ops_for(db.engine), "host-a:1", batch_rows=4_000)
    held.tuned({"target_batch_ms": 200.0, "max_rows_per_second": None})
    held.saw(Readings(lock_waits=5), {"max_lock_waits": 2})
    held.hold(Decision(LOCKS, 5.0, 2.0), utcnow())
    held.batch(4_000, 0.15, 4_000)
    held.write(0.0)
    with serving(create_app(db.settings, db.engine)) as base:
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        script_errors: list[str] = []
        page.on("pageerror", lambda exc: script_errors.append(str(exc)))
        page.goto(base + "/")
        page.wait_for_function(
            "document.getElementById('throttle-state').textContent.startsWith('waiting')",
            timeout=10_000,
        )
        assert page.inner_text("#throttle-state") == (
            "waiting (1 of 1 workers): lock_waits 5 sessions > 2 sessions"
        )
        assert "warn" in (page.get_attribute("#throttle-state", "class") or "")
        assert page.inner_text("#throttle-waiting").startswith("host-a:1: lock_waits 5 sessions")
        assert page.inner_text("#throttle-batch") == (
            "batch 4,000 rows, target 200 ms; last 4,000 in 150 ms; rate limit off"
        )
        assert script_errors == []
        page.close()
