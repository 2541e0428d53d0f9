"""`skewless backtest`: how fast a model goes stale, from models trained at past cut-offs."""

from __future__ import annotations

from typing import Annotated

import typer

from skewless.cli.common import console, load_settings, parse_time

app = typer.Typer()


@app.command()
def backtest(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    now: Annotated[str, typer.Option(
        help="Labels known at this time (ISO-8601); the cut-offs count back from the latest "
        "event labelled by then.")] = "now",
) -> None:
    """Train at past cut-offs, evaluate each model on the days after it, and store the
    maximum useful age (the first whose metric falls below a fresh model's by the margin);
    models trained afterwards carry it in their contract."""
    import json

    from skewless.reports.backtest import CutoffRun, print_backtest
    from training.evaluation.backtest import run_backtest, write_backtest

    settings = load_settings()

    def progress(run: CutoffRun) -> None:
        if not as_json:
            console.print(f"  cut-off {run.cutoff[:16]}: trained on {run.train_rows:,} label "
                          f"events, {run.evaluated_rows:,} events after it to score",
                          highlight=False)

    report = run_backtest(settings, now=parse_time(now, "--now"), on_cutoff=progress)
    json_path, html_path = write_backtest(settings, report)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, default=str))
        return
    print_backtest(report, console)
    console.print(f"report: {html_path} (JSON: {json_path}; {report.seconds:.0f} s)")
