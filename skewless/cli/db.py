"""`skewless db`: the metadata database's migrations."""

from __future__ import annotations

from typing import Annotated

import typer

from skewless.cli.common import console, load_settings

app = typer.Typer(name="db", help="The metadata database: Alembic migrations.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
               ) -> None:
    """Apply the migrations up to REVISION (run before training or serving)."""
    from skewless.db import current_revision, upgrade

    url = load_settings().resolved_database_url
    upgrade(url, revision)
    console.print(f"metadata database at revision {current_revision(url)}")


@app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(
        help="Target revision (`base` removes every table; `-1` undoes one step).")]) -> None:
    """Undo migrations down to REVISION."""
    from skewless.db import current_revision, downgrade

    url = load_settings().resolved_database_url
    downgrade(url, revision)
    console.print(f"metadata database at revision {current_revision(url) or 'base'}")


@app.command("current")
def db_current() -> None:
    """Print the database's revision."""
    from skewless.db import current_revision

    typer.echo(current_revision(load_settings().resolved_database_url) or "base")
