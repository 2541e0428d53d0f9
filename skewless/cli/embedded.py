"""`skewless redis`: a long-lived embedded redis-server for Feast's own CLI."""

from __future__ import annotations

import typer

from skewless.cli.common import console, load_settings

app = typer.Typer(name="redis", help="A long-lived embedded redis-server for Feast's own CLI.",
                  no_args_is_help=True)


@app.command("start")
def redis_start() -> None:
    """Start a detached embedded redis-server and print the export line for Feast's CLI."""
    from skewless.embedded_redis import start_detached

    address = start_detached(load_settings())
    typer.echo(f"export SKEWLESS_REDIS={address}")


@app.command("stop")
def redis_stop() -> None:
    """Stop the detached embedded redis-server started by `skewless redis start`."""
    from skewless.embedded_redis import stop_detached

    stopped = stop_detached(load_settings())
    console.print("stopped" if stopped else "no embedded redis-server was running", style="dim")
