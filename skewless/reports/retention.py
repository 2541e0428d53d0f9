"""`skewless logs prune`'s report: what the served-feature log's retention deleted, and why
the rest is kept."""

from __future__ import annotations

from rich.console import Console

from skewless.documents import JsonDocument


class Need(JsonDocument):
    """A reader of the log that needs its rows since ``since`` (None: needs none)."""

    reader: str  # open rollout, monitor window, retraining window, skew check
    since: str | None
    note: str


class PrunedDay(JsonDocument):
    day: str  # YYYY-MM-DD
    files: int
    rows: int
    bytes: int


class RetentionReport(JsonDocument):
    log_dir: str
    generated_at: str
    retention_days: float
    cutoff: str  # days before this date are deleted (now − retention, or earlier)
    bound_by: str  # what set the cutoff: retention, or the reader whose need wins
    needs: list[Need]
    dry_run: bool
    deleted: list[PrunedDay]
    kept_days: int


def print_retention(report: RetentionReport, console: Console) -> None:
    verb = "would delete" if report.dry_run else "deleted"
    rows = sum(d.rows for d in report.deleted)
    size = sum(d.bytes for d in report.deleted)
    console.print(f"{report.log_dir}: {verb} {len(report.deleted)} day(s) before "
                  f"{report.cutoff} ({rows:,} rows, {size / 1e6:,.1f} MB); kept "
                  f"{report.kept_days} day(s); the cutoff is set by {report.bound_by}",
                  highlight=False)
    for need in report.needs:
        console.print(f"  {need.reader}: {need.note}", highlight=False)
