"""`skewless logs`: the served-feature log's retention."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skewless.cli.common import Json, console, load_settings

app = typer.Typer(name="logs", no_args_is_help=True, help="The served-feature log.")


@app.command("prune")
def logs_prune(
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Say what would be deleted; delete nothing.")] = False,
    log_dir: Annotated[Path | None, typer.Option(
        help="Served-feature logs (default: the feature service's logging destination).")]
    = None,
    as_json: Json = False,
) -> None:
    """Delete the log's days older than SKEWLESS_LOG_RETENTION_DAYS, except those an open
    rollout, the monitor's or the retraining's window or the skew check still needs."""
    import json

    from skewless.reports.retention import print_retention
    from training.retention import prune

    settings = load_settings()
    if log_dir is None:
        from skewless.contract import logging_destination
        from training.dataset import open_store

        log_dir = settings.feature_log_dir or logging_destination(
            open_store(settings), settings.feature_service)
    report = prune(settings, log_dir, dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    print_retention(report, console)
