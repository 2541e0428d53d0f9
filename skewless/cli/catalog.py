"""`skewless catalog`: search the feature catalog, refresh its statistics, serve it."""

from __future__ import annotations

from typing import Annotated

import typer

from skewless.cli.common import Json, console, load_settings

app = typer.Typer(name="catalog",
                  help="The feature catalog: search it, refresh its statistics, serve it.",
                  no_args_is_help=True)


@app.command("search")
def catalog_search(
    text: Annotated[str, typer.Argument(help="Words that must all appear in a feature's name, "
                                        "description, tags or owner.")] = "",
    tag: Annotated[str | None, typer.Option(help="Only features tagged KEY or KEY=VALUE.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only features of this owner.")] = None,
    entity: Annotated[str | None, typer.Option(help="Only features of this entity.")] = None,
    as_json: Json = False,
) -> None:
    """Find features in the Feast registry; exit 1 when none matches."""
    import json

    from rich.table import Table

    from service.catalog.catalog import Catalog

    catalog = Catalog.open(load_settings())
    index = catalog.index(text, tag, owner, entity)
    if as_json:
        typer.echo(json.dumps([f.model_dump() for f in index.features], indent=2))
    else:
        table = Table(title=f"{len(index.features)} of {index.total_features} features")
        table.add_column("feature", no_wrap=True)
        for column in ("type", "owner", "description", "feature services"):
            table.add_column(column)
        for f in index.features:
            table.add_row(f.ref, f.dtype, f.owner, f.description, ", ".join(f.feature_services))
        console.print(table)
    if not index.features:
        raise typer.Exit(1)


@app.command("refresh")
def catalog_refresh(
    online: Annotated[bool, typer.Option(help="Sample the age of online values (needs Redis).")]
    = True,
) -> None:
    """Recompute the catalog's statistics from the offline data and the served-feature logs."""
    from contextlib import nullcontext

    from skewless.embedded_redis import redis_for
    from training.stats import refresh_stats

    settings = load_settings()
    with redis_for(settings) if online else nullcontext():
        doc = refresh_stats(settings, online=online)
    problems = {name: v["error"] for part in ("views", "serving", "online")
                for name, v in doc[part].items() if v.get("error")}
    rows = sum(v.get("rows", 0) for v in doc["views"].values())
    console.print(f"[green]statistics of {len(doc['features'])} features[/] over {rows:,} offline "
                  f"rows and {len(doc['serving'])} served-feature logs in {doc['seconds']:.1f}s "
                  f"→ {settings.catalog_stats_path}")
    for name, problem in problems.items():
        console.print(f"[yellow]{name}[/]: {problem}")


@app.command("serve")
def catalog_serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default SKEWLESS_API_HOST).")]
    = None,
    port: Annotated[int | None, typer.Option(help="Port (default SKEWLESS_API_PORT).")] = None,
) -> None:
    """Serve the catalog alone (`skewless serve` includes it beside the predictor)."""
    from service.app import create_catalog_app
    from service.http_server import run_server

    settings = load_settings()
    run_server(create_catalog_app(settings), host=host or settings.api_host,
               port=settings.api_port if port is None else port,
               read_timeout=settings.request_read_timeout_seconds)
