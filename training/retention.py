"""`skewless logs prune`: the served-feature log's retention.

The log is written one directory per UTC day (``__log_date=YYYY-MM-DD``); pruning deletes
whole days before a cutoff. The cutoff is now − ``log_retention_days``, unless a reader of
the log still needs older rows, and then it is that reader's first day:

- an **open rollout**: its comparison reads every row since the challenger left candidate;
- the **monitor**: its default window (``monitor_window_days``), whose delayed labels are
  still arriving;
- the **retraining**: its window (``retrain_window_days``) when it learns from the served
  logs (``retrain_source=served-logs``);
- the **skew check**: rows served after the last check of the served log, not replayed yet.

So a need always wins over retention: a day is deleted only when every reader is done with
it. The report names what set the cutoff, each need, and every day deleted (files, rows,
bytes); ``dry_run`` deletes nothing. Each prune that deleted something is audited in the
metadata database when it can be reached.
"""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from skewless.files import JsonFiles
from skewless.reports.retention import Need, PrunedDay, RetentionReport
from skewless.reports.skew import SkewReport
from skewless.served_log import LOG_DATE, log_files
from skewless.settings import Settings

ACTOR = "skewless logs prune"


def _rollout_need(settings: Settings) -> Need:
    from skewless.registry import Registry, RegistryError

    reader = "open rollout"
    try:
        registry = Registry.from_settings(settings)
    except RegistryError as exc:
        return Need(reader=reader, since=None, note=f"registry not readable ({exc})")
    try:
        status = registry.rollout(settings.feature_service)
    except RegistryError:
        return Need(reader=reader, since=None, note="no model registered")
    finally:
        registry.close()
    if status.challenger is None or status.started_at is None:
        return Need(reader=reader, since=None, note="none open")
    started = status.started_at if status.started_at.tzinfo else status.started_at.replace(
        tzinfo=UTC)
    return Need(reader=reader, since=started.isoformat(),
                note=f"challenger {status.challenger} ({status.stage}) since "
                     f"{started.isoformat()[:19]}")


def _skew_need(settings: Settings) -> Need:
    reader = "skew check"
    report = JsonFiles().read_model(settings.skew_report_path, SkewReport)
    if report is None or report.log_dir == SkewReport.ONLINE_STORE:
        return Need(reader=reader, since=None,
                    note="no check of the served log recorded: nothing held for it")
    covered = report.until or report.checked_at
    return Need(reader=reader, since=covered,
                note=f"rows served after its last check ({covered[:19]}) not replayed yet")


def needs(settings: Settings, now: datetime) -> list[Need]:
    """What each reader of the log needs kept."""
    monitor = now - timedelta(days=settings.monitor_window_days)
    out = [_rollout_need(settings),
           Need(reader="monitor window", since=monitor.isoformat(),
                note=f"the last {settings.monitor_window_days:g} days (monitor_window_days)")]
    if settings.retrain_source == "served-logs":
        retrain = now - timedelta(days=settings.retrain_window_days)
        out.append(Need(reader="retraining window", since=retrain.isoformat(),
                        note=f"the last {settings.retrain_window_days:g} days "
                             "(retrain_window_days; it learns from the served logs)"))
    else:
        out.append(Need(reader="retraining window", since=None,
                        note="learns from Feast's offline store, not from the log"))
    out.append(_skew_need(settings))
    return out


def _day(directory: Path) -> date | None:
    name = directory.name
    prefix = f"{LOG_DATE}="
    if not name.startswith(prefix):
        return None
    try:
        return date.fromisoformat(name[len(prefix):])
    except ValueError:
        return None


def prune(settings: Settings, log_dir: Path, now: datetime | None = None,
          dry_run: bool = False) -> RetentionReport:
    """Delete the log's days before the cutoff (see the module); the report of it."""
    now = now or datetime.now(UTC)
    wanted = needs(settings, now)
    cutoff = now - timedelta(days=settings.log_retention_days)
    bound_by = f"retention ({settings.log_retention_days:g} days)"
    for need in wanted:
        if need.since is not None:
            since = datetime.fromisoformat(need.since)
            since = since if since.tzinfo else since.replace(tzinfo=UTC)
            if since < cutoff:
                cutoff, bound_by = since, need.reader
    first_kept = cutoff.astimezone(UTC).date()
    days: dict[date, list[Path]] = {}
    for path in log_files(log_dir):
        day = _day(path.parent)
        if day is not None:
            days.setdefault(day, []).append(path)
    deleted = []
    for day in sorted(d for d in days if d < first_kept):
        files = days[day]
        deleted.append(PrunedDay(
            day=day.isoformat(), files=len(files),
            rows=sum(pq.ParquetFile(f).metadata.num_rows for f in files),
            bytes=sum(f.stat().st_size for f in files)))
        if not dry_run:
            shutil.rmtree(files[0].parent)
    report = RetentionReport(
        log_dir=str(log_dir), generated_at=datetime.now(UTC).isoformat(),
        retention_days=settings.log_retention_days, cutoff=first_kept.isoformat(),
        bound_by=bound_by, needs=wanted, dry_run=dry_run, deleted=deleted,
        kept_days=sum(1 for d in days if d >= first_kept))
    if deleted and not dry_run:
        _audit(settings, report)
    return report


def _audit(settings: Settings, report: RetentionReport) -> None:
    from skewless.db import DatabaseUnavailable
    from skewless.registry import Registry, RegistryError

    try:
        registry = Registry.from_settings(settings)
        try:
            registry.audit(ACTOR, "prune logs", report.log_dir, "done", {
                "cutoff": report.cutoff, "bound_by": report.bound_by,
                "days": [d.day for d in report.deleted],
                "rows": sum(d.rows for d in report.deleted)})
        finally:
            registry.close()
    except (RegistryError, DatabaseUnavailable):  # the prune is done; its report says so
        pass
