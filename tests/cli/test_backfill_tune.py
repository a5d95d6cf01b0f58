"""`unistatus backfill tune` and the adaptive options, as an operator runs them: a tune
reaches a running multi-worker backfill (another process) through the database."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

from support.backfill_data import interrupted_job
from support.cli_run import UNISTATUS, as_json, cli, runner  # noqa: F401
from unistatus.backfill import progress, read_workers
from unistatus.backfill.activity import Activity
from unistatus.backfill.health import P95, Decision, Readings
from unistatus.cli import app
from unistatus.clock import utcnow
from unistatus.db.control import history
from unistatus.db.dialect import ops_for
from unistatus.sim.seed import seed_legacy


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_tune_reaches_a_running_multi_worker_backfill(pg: Any) -> None:
    seed_legacy(pg.engine, pg.settings, 30_000, seed=11)
    # 300 rows/s for two workers and fixed batches: about 100 s left to itself.
    proc = subprocess.Popen(
        [
            UNISTATUS,
            "--database-url",
            pg.url,
            "backfill",
            "--workers",
            "2",
            "--batch-size",
            "100",
            "--target-batch-ms",
            "0",
            "--max-rows-per-second",
            "300",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def both_copying() -> bool:
            assert proc.poll() is None, proc.communicate()
            done = sum(p["done"] for p in progress(pg.engine, pg.settings).values())
            return done >= 200 and len(read_workers(pg.engine)) == 2

        wait_for(both_copying, "two workers copying")
        slow = [w["readings"]["max_rows_per_second"] for w in read_workers(pg.engine)]
        assert slow == [300.0, 300.0]
        tuned = as_json(
            cli(
                pg.url,
                "backfill",
                "tune",
                "--max-rows-per-second",
                "off",
                "--target-batch-ms",
                "5000",  # far above what a batch here takes: sizes can only grow
                "--reason",
                "off-peak",
                "--json",
            )
        )
        assert tuned["tuned"] == {"max_rows_per_second": None, "target_batch_ms": 5000.0}
        out, err = proc.communicate(timeout=60)  # ~100 s at the old rate
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["complete"] and report["inserted"] == 30_000 and report["workers"] == 2
    workers = read_workers(pg.engine, include_finished=True)
    assert len(workers) == 2
    for w in workers:
        # Both workers took the tune: no rate, and batches sized by time from then on.
        assert w["readings"]["max_rows_per_second"] is None
        assert w["readings"]["target_batch_ms"] == 5000.0
    assert max(w["batch_rows"] for w in workers) > 100
    (change,) = history(pg.engine, key="backfill.max_rows_per_second")
    assert (change.new_value, change.actor, change.reason) == ("off", "cli", "off-peak")


def test_status_and_tune_json_shapes_and_errors(db: Any) -> None:
    seed_legacy(db.engine, db.settings, 300, seed=2)
    run = as_json(cli(db.url, "backfill", "--batch-size", "20", "--min-batch-rows", "10", "--json"))
    assert run["complete"] and run["batches_this_run"] >= 3
    assert run["tuning"]["min_batch_rows"] == 10 and run["tuning"]["target_batch_ms"] == 200

    def refused(*args: str) -> str:
        result = cli(db.url, "backfill", *args)
        assert result.exit_code == 2, result.output
        return result.output

    # The job is done: a tune would belong to none (a new job starts from the settings).
    assert "no backfill job" in refused("tune", "--max-lock-waits", "0")
    status = as_json(cli(db.url, "backfill", "status", "--json"))
    assert status["tuning"]["of"] == "new job"
    interrupted_job(db)  # a new job, stopped after its first batch
    tuned = as_json(cli(db.url, "backfill", "tune", "--max-lock-waits", "0", "--json"))
    assert tuned["tuned"] == {"max_lock_waits": 0} and tuned["of"] == "next run"
    assert tuned["changes"][0]["key"] == "backfill.max_lock_waits"
    status = as_json(cli(db.url, "backfill", "status", "--json"))
    assert {"systems", "quarantined", "workers", "tuning"} <= set(status)
    assert status["workers"] == []  # none running now
    assert status["tuning"]["values"]["max_lock_waits"] == 0
    assert status["tuning"]["sources"]["max_lock_waits"].startswith("tune by cli")
    text = " ".join(cli(db.url, "backfill", "status").stdout.split())
    assert "max_lock_waits=0 (tune by cli" in text and "the unfinished job's next run" in text
    nothing = refused("tune")  # the flags, not the library's names
    assert "nothing to tune" in nothing and "--max-replication-lag," in nothing
    assert "max_replication_lag_seconds" not in nothing
    assert "number" in refused("tune", "--max-rows-per-second", "fast")
    assert "number" in refused("tune", "--max-lock-waits", "-1")
    refused("tune", "--target-batch-ms", "-5")
    refused("--target-batch-ms", "-1")
    assert "above max" in refused("--min-batch-rows", "500", "--max-batch-rows", "100")


def test_tune_refuses_the_rates_the_backfill_refuses(db: Any) -> None:
    """A rate under the backfill's floor was stored by `tune`, and a worker then asked to
    sleep longer than the platform's time_t (1e-9 rows/s: OverflowError, the run
    dead). Both commands refuse it alike, and nothing is stored."""
    for args in (("tune", "--max-rows-per-second", "1e-9"), ("--max-rows-per-second", "1e-9")):
        result = cli(db.url, "backfill", *args)
        assert result.exit_code == 2, result.output
        assert "0.001" in " ".join(result.output.split())
    assert history(db.engine, key="backfill.max_rows_per_second") == []


def test_tune_refuses_min_above_max_and_stores_every_digit(db: Any) -> None:
    """`backfill` refuses a min batch above the max; `tune` took it. A rate was stored
    with 6 significant digits (1234567 became 1234570). With no worker running, the
    tune says the job's next run takes it."""
    seed_legacy(db.engine, db.settings, 600, seed=4)
    interrupted_job(db)
    refused = cli(db.url, "backfill", "tune", "--min-batch-rows", "50000", "--max-batch-rows", "10")
    assert refused.exit_code == 2, refused.output
    assert "above" in refused.output
    assert history(db.engine, key="backfill.min_batch_rows") == []
    text = cli(db.url, "backfill", "tune", "--max-rows-per-second", "1234567")
    assert text.exit_code == 0, text.output
    said = " ".join(text.output.split())
    assert "max_rows_per_second=1234567.0" in said and "no worker is running" in said
    (change,) = history(db.engine, key="backfill.max_rows_per_second")
    assert change.new_value == "1234567"
    status = as_json(cli(db.url, "backfill", "status", "--json"))
    assert status["tuning"]["values"]["max_rows_per_second"] == 1234567.0


def test_status_says_why_a_worker_holds_back(db: Any) -> None:
    held = Activity(ops_for(db.engine), "host-a:1", batch_rows=4_000)
    held.saw(Readings(p95_ms=240.0, operations=500), {"p95_limit_ms": 120.0})
    held.hold(Decision(P95, 240.0, 120.0), utcnow())
    held.write(0.0)
    (worker,) = as_json(cli(db.url, "backfill", "status", "--json"))["workers"]
    assert worker["state"] == "throttled" and worker["batch_rows"] == 4_000
    assert worker["throttle"]["reason"] == P95 and worker["throttle"]["since"]
    assert (worker["throttle"]["reading"], worker["throttle"]["limit"]) == (240.0, 120.0)
    text = " ".join(cli(db.url, "backfill", "status").stdout.split())
    assert "host-a:1" in text and "p95_latency: 240 > 120 since" in text


def test_help_shows_examples_of_tune_and_the_sizing() -> None:
    text = runner.invoke(app, ["backfill", "tune", "--help"]).output
    assert "Examples" in text and "--max-rows-per-second" in text
    text = runner.invoke(app, ["backfill", "--help"]).output
    assert "--target-batch-ms" in text and "backfill tune" in text


def test_the_run_reports_the_tuning_it_used(db: Any) -> None:
    """A run of an unfinished job tuned meanwhile copies at the tuned rate, and its
    report says so: it said the settings' (``max_rows_per_second: null``) while the cap
    was in force (exploratory review)."""
    seed_legacy(db.engine, db.settings, 300, seed=2)
    interrupted_job(db)
    tuned = cli(db.url, "backfill", "tune", "--max-rows-per-second", "100000", "--json")
    assert tuned.exit_code == 0, tuned.output
    run = as_json(cli(db.url, "backfill", "--json"))
    assert run["complete"]
    assert run["tuning"]["max_rows_per_second"] == 100000
    assert run["tuning_sources"]["max_rows_per_second"].startswith("tune by cli")
    assert run["tuning_sources"]["target_batch_ms"] == "settings"
