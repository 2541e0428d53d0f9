"""`skewless init`: prepare an existing Feast repo for Skewless (see skewless.repo_setup)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skewless.cli.common import console

app = typer.Typer()


@app.command()
def init(
    repo: Annotated[Path, typer.Argument(
        help="The Feast repo: the directory holding feature_store.yaml.")],
    feature_service: Annotated[str | None, typer.Option(
        help="The feature service the model is trained on and served with.")] = None,
    events: Annotated[Path | None, typer.Option(
        help="Parquet of events: an id, a time, entity keys and request fields.")] = None,
    labels: Annotated[Path | None, typer.Option(
        help="Parquet of labels: the event id, the label and when it became known.")] = None,
    event_id: Annotated[str | None, typer.Option(
        help="Column joining events and labels.")] = None,
    event_timestamp: Annotated[str | None, typer.Option(
        help="Events' time column (features are read as of it).")] = None,
    label: Annotated[str | None, typer.Option(help="Labels' label column.")] = None,
    label_timestamp: Annotated[str | None, typer.Option(
        help="Labels' column of when the label became known.")] = None,
    truth: Annotated[Path | None, typer.Option(
        help="Optional parquet of true probabilities (event id, probability).")] = None,
    force: Annotated[bool, typer.Option(
        help="Replace an online store Skewless cannot serve from, and an existing "
        "skewless.env (both are saved beside first).")] = False,
) -> None:
    """Add skewless.env and the Redis and DuckDB stores to a Feast repo; definitions untouched."""
    from skewless.repo_setup import LabelSource, init_repo

    report = init_repo(repo, LabelSource(
        feature_service=feature_service, events_path=events, labels_path=labels,
        event_id_column=event_id, event_timestamp_column=event_timestamp,
        label_column=label, label_timestamp_column=label_timestamp, truth_path=truth,
    ), force=force)
    if report.changed:
        console.print(f"[green]prepared[/] {report.repo} for Skewless:")
    else:
        console.print(f"[green]nothing to change[/]: {report.repo} is prepared for Skewless")
    for line in report.changed:
        console.print(f"  changed: {line}", soft_wrap=True, highlight=False)
    for line in report.kept:
        console.print(f"  kept: {line}", soft_wrap=True, highlight=False)
    for line in report.notes:
        console.print(f"[yellow]note:[/] {line}", soft_wrap=True, highlight=False)
    console.print(
        "\nNext, point every command at the repo and check it:\n"
        f"  export SKEWLESS_REPO_PATH={report.repo}\n"
        "  skewless doctor\n"
        "then: skewless apply, skewless materialize, skewless dataset --output "
        "training.parquet, skewless train --dataset training.parquet",
        soft_wrap=True, highlight=False)
