"""The online predictor, and the demo that builds everything and serves a few requests."""

from __future__ import annotations

from typing import Annotated

import typer

from skewless.cli.common import console, load_settings

app = typer.Typer()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default SKEWLESS_API_HOST).")]
    = None,
    port: Annotated[int | None, typer.Option(help="Port (default SKEWLESS_API_PORT).")] = None,
) -> None:
    """Run the online predictor (uvicorn, one process) on the configured or embedded Redis."""
    import signal
    import sys

    from service.app import create_app
    from service.http_server import run_server
    from skewless.embedded_redis import redis_for
    from training.evaluation.gate import promote

    settings = load_settings()
    # uvicorn drains requests on SIGTERM/SIGINT and then re-raises the signal; turning it into
    # a normal exit lets the embedded redis-server below save its data and stop too.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    with redis_for(settings) as address:
        app_settings = settings.model_copy(update={"redis": address})
        run_server(create_app(app_settings, promote=promote), host=host or settings.api_host,
                   port=settings.api_port if port is None else port,
                   read_timeout=settings.request_read_timeout_seconds,
                   timeout_graceful_shutdown=30)


@app.command()
def demo(
    cards: Annotated[int | None, typer.Option(help="Cards to generate (default 2,000).")] = None,
    days: Annotated[int, typer.Option(help="Days of history.")] = 60,
    trials: Annotated[int, typer.Option(
        min=0, help="Trials of the closing hyperparameter search (0: none).")] = 5,
) -> None:
    """generate → features → feast apply → materialize → dataset → train → a small search →
    serve a few requests."""
    from service.demo import run_serving_demo
    from training.demo import run_demo

    settings = load_settings()
    run_demo(settings, console, cards=cards, days=days, trials=trials)
    served = run_serving_demo(settings, console)
    # The promise, checked: what was just served, replayed through the training path.
    from skewless.reports.skew import print_skew
    from training.skew import check_served, save_report

    report = check_served(settings, since=served["started_at"])
    save_report(report, settings.skew_report_path)
    print_skew(report, console, brief=True)
    # Again, now that features were served: the catalog shows their online missing rates.
    from skewless.embedded_redis import redis_for
    from training.stats import refresh_stats

    with redis_for(settings):
        refresh_stats(settings)
    console.print(f"feature catalog: [bold]skewless serve[/], then "
                  f"http://{settings.api_host}:{settings.api_port}/catalog")
