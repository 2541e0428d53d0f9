"""`skewless doctor`: what works in a Feast repo and the settings, and what to change."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skewless.cli.common import Json, console, load_settings

app = typer.Typer()


@app.command()
def doctor(
    repo: Annotated[Path | None, typer.Argument(
        help="The Feast repo (default SKEWLESS_REPO_PATH).")] = None,
    as_json: Json = False,
) -> None:
    """Check a Feast repo and the settings: what works, what to change; exit 1 if an item blocks."""
    import json

    from skewless.doctor import diagnose
    from skewless.reports.doctor import print_doctor

    settings = load_settings()
    if repo is not None:
        settings = settings.model_copy(update={"repo_path": repo.absolute()})
    report = diagnose(settings)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        print_doctor(report, console)
    if report.blocked:
        raise typer.Exit(1)
