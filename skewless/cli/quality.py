"""Does the data, and serving, hold the promise: expectations, the skew check, the monitor."""

from __future__ import annotations

from datetime import datetime
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


AcceptFailures = Annotated[bool, typer.Option(
    "--accept-failures", help="Go on although expectations fail (needs --reason; audited).")]
Reason = Annotated[str | None, typer.Option(
    help="Why failing expectations are accepted (with --accept-failures).")]


def expectations_gate(step: str, reference_time: datetime, views: list[str] | None,
                      accept_failures: bool, reason: str | None, as_json: bool = False,
                      service: str | None = None) -> None:
    """Check the expectations before ``step`` and store the result; print the report. Exits 1
    when one failed and was not accepted with a reason."""
    import json

    from skewless.reports.validation import print_validation
    from skewless.validations import check_expectations

    if accept_failures and not (reason and reason.strip()):
        raise typer.BadParameter("--accept-failures needs --reason TEXT: the audit records why",
                                 param_hint="--reason")
    if reason is not None and not accept_failures:
        raise typer.BadParameter("--reason goes with --accept-failures",
                                 param_hint="--accept-failures")
    settings = load_settings()
    report, run_id = check_expectations(settings, step, reference_time, views,
                                        reason.strip() if accept_failures and reason else None,
                                        service=service)
    if as_json:
        typer.echo(json.dumps({**report.to_json(), "run_id": run_id,
                               "accepted": accept_failures and not report.passed}, indent=2))
    else:
        print_validation(report, console, run_id, accepted=accept_failures)
    if not report.passed and not accept_failures:
        raise typer.Exit(1)


@app.command()
def validate(
    view: Annotated[list[str] | None, typer.Option(
        help="Only this feature view or request source (repeatable; default: all with "
        "expectations).")] = None,
    as_of: Annotated[str, typer.Option(
        help="Freshness is judged against this time (ISO-8601, default now).")] = "now",
    accept_failures: AcceptFailures = False,
    reason: Reason = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check the feature tables against their expectations (the views' `expectations` tags);
    store the result; exit 1 when one fails."""
    stamp = parse_time(as_of, "--as-of")
    assert stamp is not None
    expectations_gate("validate", stamp, view or None, accept_failures, reason, as_json)
