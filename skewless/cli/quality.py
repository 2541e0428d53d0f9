"""Does serving hold its promise: the skew check and the monitor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skewless.cli.common import console, load_settings, parse_time

app = typer.Typer()


@app.command("skew-check")
def skew_check(
    since: Annotated[str | None, typer.Option(help="First served-at time (ISO-8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Last served-at time (ISO-8601).")] = None,
    sample: Annotated[int | None, typer.Option(help="Check a random sample of N rows.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    max_mismatches: Annotated[int, typer.Option(
        help="Exit 1 when more values than this mismatch.")] = 0,
    log_dir: Annotated[Path | None, typer.Option(
        help="Served-feature logs (default: the feature service's logging destination).")]
    = None,
    online: Annotated[bool, typer.Option(
        "--online", help="Instead: reconcile Redis with the offline latest values (after "
        "materialization), for --sample entities per view (default 1,000).")] = False,
) -> None:
    """Replay served feature vectors through the training path and compare value by value."""
    import json

    from skewless.embedded_redis import redis_for
    from skewless.reports.skew import print_skew
    from training.skew import check_online, check_served, save_report

    settings = load_settings()
    if online:
        with redis_for(settings):
            report = check_online(settings, sample or 1000)
    else:
        report = check_served(settings, parse_time(since, "--since"),
                              parse_time(until, "--until"), sample, log_dir)
        save_report(report, settings.skew_report_path)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, default=str))
    else:
        print_skew(report, console)
    if report.mismatches > max_mismatches:
        raise typer.Exit(1)


@app.command()
def monitor(
    since: Annotated[str | None, typer.Option(
        help="First served-at time (ISO-8601; default SKEWLESS_MONITOR_WINDOW_DAYS before "
        "--until).")] = None,
    until: Annotated[str | None, typer.Option(help="Last served-at time (default now).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    retrain: Annotated[bool, typer.Option(
        "--retrain", help="When the retraining policy is met: build a training set, train, "
        "pass the acceptance gate and promote (all audited).")] = False,
    output: Annotated[Path | None, typer.Option(
        help="Directory of the JSON and HTML report (default var/monitor; the latest there "
        "is what /metrics exports).")] = None,
    log_dir: Annotated[Path | None, typer.Option(
        help="Served-feature logs (default: the feature service's logging destination).")]
    = None,
) -> None:
    """Drift, data quality and delayed-label performance of the served models, per version."""
    import json

    from skewless.reports.monitor import print_monitor
    from training.monitor import default_window, write_report
    from training.monitor import monitor as run_monitor
    from training.monitor import retrain as run_retrain

    settings = load_settings()
    window = default_window(settings, parse_time(since, "--since"),
                            parse_time(until, "--until"))
    report = run_monitor(settings, window, log_dir)
    if retrain and report.trigger.retrain:
        report.retraining = run_retrain(settings, report)
    json_path, html_path = write_report(report, output or settings.monitor_dir,
                                        settings.feature_service)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, default=str))
        return
    print_monitor(report, console)
    console.print(f"report: {html_path} (JSON: {json_path})")
