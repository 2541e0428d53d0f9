"""The served-feature log's retention: only what is old and no reader needs is deleted.

A log of one file per day over 120 days (the predictor's layout), a parquet file of another
kind beside it, a SQLite registry. Retention alone, then each reader's need in turn (an open
rollout, the retraining window on served logs, rows the skew check has not replayed) must
move the cutoff back; what is kept is byte for byte what was there; a dry run deletes nothing;
the command prints the same report as JSON and the prune is audited.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from skewless.cli import app as cli
from skewless.db import upgrade
from skewless.registry import Registry, StageTransition
from skewless.settings import Settings
from tests.support.artifacts import write_artifact
from training.retention import prune

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
DAYS = 120


@pytest.fixture
def world(tmp_path: Path):
    settings = Settings(repo_path=tmp_path / "repo", var_dir=tmp_path / "var",
                        feature_service="fraud", feature_log_dir=tmp_path / "logs",
                        log_retention_days=30, monitor_window_days=7)
    for back in range(DAYS):
        day = (NOW - timedelta(days=back)).date()
        directory = settings.feature_log_dir / f"__log_date={day}"
        directory.mkdir(parents=True)
        rows = 10 + back % 7
        pq.write_table(pa.table({"__request_id": [f"{day}-{i}" for i in range(rows)]}),
                       directory / "part-0.parquet")
    other = settings.feature_log_dir / "source.parquet"  # not the log's: never touched
    pq.write_table(pa.table({"x": [1]}), other)
    upgrade(settings.resolved_database_url)
    return settings


def days_left(settings: Settings) -> list[date]:
    return sorted(date.fromisoformat(p.name.split("=")[1])
                  for p in settings.feature_log_dir.glob("__log_date=*"))


def digests(settings: Settings) -> dict[str, str]:
    return {str(p.relative_to(settings.feature_log_dir)): hashlib.sha256(p.read_bytes())
            .hexdigest() for p in settings.feature_log_dir.rglob("*.parquet")}


def test_retention_alone_deletes_the_old_days_only(world):
    before = digests(world)
    dry = prune(world, world.feature_log_dir, now=NOW, dry_run=True)
    assert digests(world) == before
    report = prune(world, world.feature_log_dir, now=NOW)
    cutoff = (NOW - timedelta(days=30)).date()
    assert report.cutoff == cutoff.isoformat() and report.bound_by == "retention (30 days)"
    assert days_left(world)[0] == cutoff and len(days_left(world)) == 31
    deleted = [d.day for d in report.deleted]
    assert deleted == [d.day for d in dry.deleted] == sorted(
        str((NOW - timedelta(days=b)).date()) for b in range(31, DAYS))
    assert sum(d.rows for d in report.deleted) == sum(10 + b % 7 for b in range(31, DAYS))
    after = digests(world)
    assert after == {k: v for k, v in before.items() if k in after}  # kept: unchanged
    assert "source.parquet" in after
    again = prune(world, world.feature_log_dir, now=NOW)
    assert again.deleted == []
    registry = Registry(world.resolved_database_url)
    try:
        events = [e for e in registry.audit_events() if e.action == "prune logs"]
    finally:
        registry.close()
    assert len(events) == 1 and events[0].detail["days"] == deleted  # the empty one: none


@pytest.mark.parametrize("reader", ["open rollout", "retraining window", "skew check"])
def test_a_reader_that_still_needs_older_rows_wins_over_retention(world, tmp_path, reader):
    settings = world
    since = NOW - timedelta(days=50)
    if reader == "open rollout":
        registry = Registry(settings.resolved_database_url)
        try:
            for v in ("v1", "v2"):
                registry.register(write_artifact(tmp_path / "models" / v, v), actor="t")
            registry.promote("fraud", "v1", "alice", "first", {}, expected_production=None)
            registry.shadow("fraud", "v2", "bob", "try")
            with registry.session() as session:  # the rollout started 50 days ago
                session.execute(sa.update(StageTransition).where(
                    StageTransition.to_stage == "shadow").values(at=since))
        finally:
            registry.close()
    elif reader == "retraining window":
        settings = settings.model_copy(update={"retrain_source": "served-logs",
                                               "retrain_window_days": 50})
    else:
        settings.skew_report_path.parent.mkdir(parents=True, exist_ok=True)
        settings.skew_report_path.write_text(json.dumps({
            "feature_service": "fraud", "rows": 5, "since": None, "until": since.isoformat(),
            "log_dir": str(settings.feature_log_dir), "tolerance": {}, "features": {},
            "checked_at": (NOW - timedelta(days=49)).isoformat()}))
    report = prune(settings, settings.feature_log_dir, now=NOW)
    assert report.bound_by == reader, report.needs
    assert report.cutoff == since.date().isoformat()
    assert days_left(settings)[0] == since.date()


def test_the_command_prints_the_report(world, monkeypatch):
    for key, value in {"SKEWLESS_VAR_DIR": world.var_dir, "SKEWLESS_REPO_PATH": world.repo_path,
                       "SKEWLESS_FEATURE_SERVICE": "fraud",
                       "SKEWLESS_FEATURE_LOG_DIR": world.feature_log_dir,
                       "SKEWLESS_LOG_RETENTION_DAYS": "200"}.items():
        monkeypatch.setenv(key, str(value))
    result = CliRunner().invoke(cli, ["logs", "prune", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["deleted"] == [] and doc["kept_days"] == DAYS and doc["dry_run"] is True
    assert {n["reader"] for n in doc["needs"]} == {"open rollout", "monitor window",
                                                   "retraining window", "skew check"}
