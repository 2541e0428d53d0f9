"""The ``skewless`` command: one subcommand per pipeline stage.

Each command imports its module inside its body so ``skewless --help`` stays fast and no
import cycle forms between training/ and service/.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from skewless.settings import Settings, get_settings

app = typer.Typer(help="Skewless: one feature definition for training and serving.",
                  no_args_is_help=True, add_completion=False)
redis_app = typer.Typer(help="A long-lived embedded redis-server for Feast's own CLI.",
                        no_args_is_help=True)
app.add_typer(redis_app, name="redis")
db_app = typer.Typer(help="The metadata database: Alembic migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
models_app = typer.Typer(help="The model registry: versions, stages and their audit.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")
catalog_app = typer.Typer(help="The feature catalog: search it, refresh its statistics, serve it.",
                          no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
console = Console()


def _settings() -> Settings:
    from skewless.feast_cli import quiet_library_warnings
    from skewless.settings import export_for_feast

    # Feast and ibis warn about their own internals on every call; users can do nothing
    # about them, so the CLI keeps its output to what the command did.
    quiet_library_warnings()
    settings = get_settings()
    export_for_feast()
    return settings


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value == "now":
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO-8601 time", param_hint=name) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command()
def generate(
    cards: Annotated[int | None, typer.Option(help="Number of cards (default 2,000).")] = None,
    days: Annotated[int, typer.Option(help="Days of history, ending now.")] = 60,
    scale: Annotated[float | None, typer.Option(
        help="Multiply the default card count (34.8: 69,600 cards, 10M transactions).")] = None,
    merchants: Annotated[int | None, typer.Option(help="Merchants (default cards/4).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default SKEWLESS_SEED).")] = None,
    end: Annotated[str | None, typer.Option(help="Last moment (ISO-8601); default now.")] = None,
    drift_day: Annotated[int | None, typer.Option(
        help="Shift amounts, channels and fraud after this day (0-based).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default repo data/raw).")] = None,
) -> None:
    """Generate seeded card transactions, delayed fraud labels and the Bayes AUC."""
    from training.generate import GenerateConfig, scaled_cards, write_generated
    from training.generate import generate as run

    settings = _settings()
    if cards is not None and scale is not None:
        raise typer.BadParameter("give --cards or --scale, not both", param_hint="--scale")
    n_cards = cards if cards is not None else scaled_cards(scale or 1.0)
    if n_cards < 1 or days < 1:
        raise typer.BadParameter("cards and days must be positive", param_hint="--cards/--days")
    config = GenerateConfig(
        cards=n_cards, days=days, merchants=merchants,
        seed=settings.seed if seed is None else seed, end=_parse_time(end, "--end"),
        drift_day=drift_day, holdout_days=settings.holdout_days,
    )
    data = run(config)
    paths = write_generated(data, out or settings.raw_dir)
    meta = data.meta
    console.print(
        f"[green]generated[/] {meta['transactions']:,} transactions, {meta['cards']:,} cards, "
        f"{meta['merchants']:,} merchants; fraud rate {meta['fraud_rate']:.2%}; "
        f"holdout Bayes AUC {meta['holdout']['bayes_auc']}; → {paths['meta'].parent}"
    )


@app.command()
def features(
    as_of: Annotated[str | None, typer.Option(help="Last snapshot time (default: last event).")]
    = None,
) -> None:
    """Compute the parquet feature tables from the raw data."""
    from training.pipeline import PipelinePaths, build_feature_tables

    settings = _settings()
    counts = build_feature_tables(PipelinePaths.from_settings(settings),
                                  as_of=_parse_time(as_of, "--as-of"))
    for name, n in counts.items():
        console.print(f"[green]{name}[/]: {n:,} rows → {settings.data_dir / (name + '.parquet')}")


@app.command()
def apply() -> None:
    """`feast apply` on the repo, against the configured or an embedded Redis."""
    from skewless.embedded_redis import redis_for
    from skewless.feast_cli import run_feast

    settings = _settings()
    with redis_for(settings):
        console.print(run_feast(settings, "apply").stdout.strip().splitlines()[-1])


@app.command()
def materialize(
    end: Annotated[str, typer.Option(help="Materialize up to this time.")] = "now",
) -> None:
    """`feast materialize-incremental` up to END into the online store."""
    from skewless.embedded_redis import redis_for
    from skewless.feast_cli import run_feast

    settings = _settings()
    stamp = _parse_time(end, "--end")
    assert stamp is not None
    with redis_for(settings):
        run_feast(settings, "materialize-incremental", stamp.strftime("%Y-%m-%dT%H:%M:%S"))
    console.print(f"[green]materialized[/] up to {stamp.isoformat()}")


@app.command()
def dataset(
    output: Annotated[Path, typer.Option(help="Where to write the training set (parquet).")],
    cutoff: Annotated[str, typer.Option(help="Use only labels known by then.")] = "now",
    from_logs: Annotated[bool, typer.Option(
        "--from-logs", help="Train on what was served: logged feature vectors joined with "
        "their labels by event id, instead of point-in-time retrieval.")] = False,
    since: Annotated[str | None, typer.Option(
        help="With --from-logs: first served-at time (ISO-8601).")] = None,
    until: Annotated[str | None, typer.Option(
        help="With --from-logs: last served-at time (ISO-8601).")] = None,
    log_dir: Annotated[Path | None, typer.Option(
        help="With --from-logs: served-feature logs (default: the feature service's "
        "logging destination).")] = None,
) -> None:
    """Build a training set: point-in-time through Feast, or from the served-feature log."""
    from training.dataset import write_from_logs, write_training_set

    settings = _settings()
    stamp = _parse_time(cutoff, "--cutoff")
    if not from_logs:
        if since or until or log_dir:
            raise typer.BadParameter("--since, --until and --log-dir need --from-logs",
                                     param_hint="--from-logs")
        rows = write_training_set(settings, output, cutoff=stamp)
        console.print(f"[green]training set[/]: {rows:,} label events → {output}")
        return
    counts = write_from_logs(settings, output, stamp, _parse_time(since, "--since"),
                             _parse_time(until, "--until"), log_dir)
    console.print(
        f"[green]training set from served logs[/]: {counts.rows:,} labelled events → {output}"
        f"\n  of {counts.logged:,} logged rows: {counts.without_id:,} without "
        f"{settings.event_id_column}, {counts.repeated:,} repeated scorings (first kept), "
        f"{counts.unlabelled:,} not labelled yet, {counts.other_definitions:,} served under "
        "other feature definitions"
        + (f" (model {', '.join(counts.other_versions)})" if counts.other_versions else ""),
        soft_wrap=True)


@app.command()
def train(
    dataset: Annotated[Path, typer.Option(help="A training set written by `skewless dataset`.")],
) -> None:
    """Train LightGBM with a time split; save model.txt, its sha256 and the contract."""
    from skewless.registry import Registry
    from training.dataset import TrainingSet
    from training.train import train_model

    settings = _settings()
    if not dataset.is_file():
        raise typer.BadParameter(f"{dataset} does not exist", param_hint="--dataset")
    training_set = TrainingSet.read(dataset)
    registry = Registry.from_settings(settings)  # before training: fail fast if not migrated
    try:
        result = train_model(
            training_set, settings.model_dir, settings.holdout_days,
            settings.validation_days, seed=settings.seed,
            truth_path=settings.resolved_truth_path, dataset_path=dataset,
        )
        row = registry.register(result.directory)
    finally:
        registry.close()
    m = result.contract["metrics"]["holdout"]
    bayes = f" (Bayes {m['bayes_auc']:.4f}, ratio {m['auc_to_bayes']:.3f})" if "bayes_auc" in m else ""
    console.print(f"[green]model[/] {row.name} {row.version}: holdout ROC AUC "
                  f"{m['roc_auc']:.4f}{bayes}, PR AUC {m['pr_auc']:.4f} → {result.directory}; "
                  f"registered as a candidate (promote: skewless models promote {row.name} "
                  f"{row.version})", soft_wrap=True)


@app.command()
def score(
    input_path: Annotated[Path, typer.Option(
        "--input", help="Events (parquet): entity keys, request fields, event timestamp, "
        "optionally the event id.")],
    output: Annotated[Path, typer.Option(help="Where to write the scores (parquet).")],
    model: Annotated[Path | None, typer.Option(
        help="A model artefact directory (default: the latest for the feature service).")]
    = None,
) -> None:
    """Score events for a backfill through the point-in-time path, with the training contract."""
    from training.backfill import score_events

    settings = _settings()
    summary = score_events(settings, input_path, output, model_dir=model)
    console.print(f"[green]scored[/] {summary.rows:,} events with model {summary.model_version} "
                  f"in {summary.seconds:.1f} s → {summary.output}", soft_wrap=True)


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

    settings = _settings()
    if online:
        with redis_for(settings):
            report = check_online(settings, sample or 1000)
    else:
        report = check_served(settings, _parse_time(since, "--since"),
                              _parse_time(until, "--until"), sample, log_dir)
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

    settings = _settings()
    window = default_window(settings, _parse_time(since, "--since"),
                            _parse_time(until, "--until"))
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


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default SKEWLESS_API_HOST).")]
    = None,
    port: Annotated[int | None, typer.Option(help="Port (default SKEWLESS_API_PORT).")] = None,
) -> None:
    """Run the online predictor (uvicorn, one process) on the configured or embedded Redis."""
    import signal
    import sys

    import uvicorn

    from service.app import create_app
    from skewless.embedded_redis import redis_for
    from training.gate import promote

    settings = _settings()
    # uvicorn drains requests on SIGTERM/SIGINT and then re-raises the signal; turning it into
    # a normal exit lets the embedded redis-server below save its data and stop too.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    with redis_for(settings) as address:
        app_settings = settings.model_copy(update={"redis": address})
        uvicorn.run(
            create_app(app_settings, promote=promote), host=host or settings.api_host,
            port=settings.api_port if port is None else port, loop="uvloop",
            http="httptools", access_log=False, timeout_graceful_shutdown=30,
        )


@app.command()
def demo(
    cards: Annotated[int | None, typer.Option(help="Cards to generate (default 2,000).")] = None,
    days: Annotated[int, typer.Option(help="Days of history.")] = 60,
) -> None:
    """generate → features → feast apply → materialize → dataset → train → serve a few requests."""
    from service.demo import run_serving_demo
    from training.demo import run_demo

    settings = _settings()
    run_demo(settings, console, cards=cards, days=days)
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


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
               ) -> None:
    """Apply the migrations up to REVISION (run before training or serving)."""
    from skewless.db import current_revision, upgrade

    url = _settings().resolved_database_url
    upgrade(url, revision)
    console.print(f"metadata database at revision {current_revision(url)}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(
        help="Target revision (`base` removes every table; `-1` undoes one step).")]) -> None:
    """Undo migrations down to REVISION."""
    from skewless.db import current_revision, downgrade

    url = _settings().resolved_database_url
    downgrade(url, revision)
    console.print(f"metadata database at revision {current_revision(url) or 'base'}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision."""
    from skewless.db import current_revision

    typer.echo(current_revision(_settings().resolved_database_url) or "base")


def _registry():  # type: ignore[no-untyped-def]
    from skewless.registry import Registry

    return Registry.from_settings(_settings())


Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@models_app.command("list")
def models_list(
    name: Annotated[str | None, typer.Argument(help="Only this model name.")] = None,
    as_json: Json = False,
) -> None:
    """Every registered version, its stage and holdout metric."""
    import json

    from rich.table import Table

    rows = [row.summary() for row in _registry().versions(name)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title="Model registry")
    for column in ("name", "version", "stage", "holdout ROC AUC", "created", "by"):
        table.add_column(column)
    for row in rows:
        auc = row["metrics"].get("holdout", {}).get("roc_auc")
        stage = f"[bold green]{row['stage']}[/]" if row["stage"] == "production" else row["stage"]
        table.add_row(row["name"], row["version"], stage, f"{auc:.4f}" if auc else "-",
                      row["created_at"][:19], row["created_by"])
    console.print(table)


@models_app.command("show")
def models_show(name: str, version: str, as_json: Json = False) -> None:
    """One version in full: contract, metrics, training window and stage history."""
    import json

    details = _registry().get(name, version).details()
    if as_json:
        typer.echo(json.dumps(details, indent=2, default=str))
        return
    console.print(f"[bold]{name} {version}[/] — {details['stage']}; trained by "
                  f"{details['created_by']} at {details['created_at']}; sha256 {details['sha256']}")
    console.print(f"artefact {details['artifact_uri']}; {len(details['features'])} features of "
                  f"{details['feature_service']} (fingerprint {details['fingerprint'][:12]})")
    for t in details["transitions"]:
        forced = " [red](forced)[/]" if t["forced"] else ""
        console.print(f"  {t['at'][:19]} {t['from'] or '-'} → {t['to']} by {t['actor']}"
                      f"{forced}: {t['reason']}", soft_wrap=True)


@models_app.command("register")
def models_register(directory: Annotated[Path, typer.Argument(
        help="A model artefact directory (model.txt + contract.json).")]) -> None:
    """Register an artefact trained elsewhere as a candidate."""
    row = _registry().register(directory)
    console.print(f"registered {row.name} {row.version} as a candidate")


@models_app.command("promote")
def models_promote(
    name: str, version: str,
    force: Annotated[bool, typer.Option(help="Skip the acceptance gate (needs --reason).")]
    = False,
    reason: Annotated[str | None, typer.Option(help="Why; stored in the audit.")] = None,
    as_json: Json = False,
) -> None:
    """Promote VERSION to production if it passes the acceptance gate against production."""
    import json

    from skewless.gate import PromotionRefused
    from skewless.registry import current_user
    from training.gate import promote

    settings = _settings()
    registry = _registry()
    try:
        row, decision = promote(settings, registry, name, version, current_user(), reason, force)
    except PromotionRefused as exc:
        if as_json:
            typer.echo(json.dumps({"promoted": False, "error": str(exc), **(
                exc.decision.evidence() if exc.decision else {})}, indent=2, default=str))
        else:
            console.print(f"[red]refused:[/] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps({"promoted": True, "version": row.version, **(
            decision.evidence() if decision else {"gate": "skipped (forced)"})},
            indent=2, default=str))
    else:
        how = decision.explain() if decision else f"forced: {reason}"
        console.print(f"[green]{name} {version} is production[/] — {how}", soft_wrap=True)


@models_app.command("rollback")
def models_rollback(
    name: str,
    reason: Annotated[str, typer.Option(help="Why; stored in the audit.")] = "rollback",
    as_json: Json = False,
) -> None:
    """Return production to the version that was production before the current one."""
    import json

    from skewless.registry import current_user

    row = _registry().rollback(name, current_user(), reason)
    if as_json:
        typer.echo(json.dumps({"production": row.version}))
    else:
        console.print(f"[green]{name} {row.version} is production again[/]")


@models_app.command("archive")
def models_archive(
    name: str, version: str,
    reason: Annotated[str, typer.Option(help="Why; stored in the audit.")] = "archived",
    as_json: Json = False,
) -> None:
    """Archive a candidate (production is replaced by promote or rollback, never emptied)."""
    import json

    from skewless.registry import current_user

    row = _registry().archive(name, version, current_user(), reason)
    if as_json:
        typer.echo(json.dumps({"archived": row.version}))
    else:
        console.print(f"{name} {row.version} archived")


@catalog_app.command("search")
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

    catalog = Catalog.open(_settings())
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


@catalog_app.command("refresh")
def catalog_refresh(
    online: Annotated[bool, typer.Option(help="Sample the age of online values (needs Redis).")]
    = True,
) -> None:
    """Recompute the catalog's statistics from the offline data and the served-feature logs."""
    from contextlib import nullcontext

    from skewless.embedded_redis import redis_for
    from training.stats import refresh_stats

    settings = _settings()
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


@catalog_app.command("serve")
def catalog_serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default SKEWLESS_API_HOST).")]
    = None,
    port: Annotated[int | None, typer.Option(help="Port (default SKEWLESS_API_PORT).")] = None,
) -> None:
    """Serve the catalog alone (`skewless serve` includes it beside the predictor)."""
    import uvicorn

    from service.app import create_catalog_app

    settings = _settings()
    uvicorn.run(create_catalog_app(settings), host=host or settings.api_host,
                port=settings.api_port if port is None else port, access_log=False)


@redis_app.command("start")
def redis_start() -> None:
    """Start a detached embedded redis-server and print the export line for Feast's CLI."""
    from skewless.embedded_redis import start_detached

    address = start_detached(_settings())
    typer.echo(f"export SKEWLESS_REDIS={address}")


@redis_app.command("stop")
def redis_stop() -> None:
    """Stop the detached embedded redis-server started by `skewless redis start`."""
    from skewless.embedded_redis import stop_detached

    stopped = stop_detached(_settings())
    console.print("stopped" if stopped else "no embedded redis-server was running", style="dim")


def main() -> None:
    """Entry point: known failures print one clear line and exit 1, not a traceback."""
    from skewless.errors import SkewlessError

    try:
        app()
    except SkewlessError as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)  # one line, however long
        raise SystemExit(1) from None
    except Exception as exc:
        if type(exc).__module__.startswith("feast."):  # e.g. a feature service not applied
            console.print(f"[red]Feast error:[/] {exc}\n(has `skewless apply` run on this repo?)",
                          soft_wrap=True)
            raise SystemExit(1) from None
        raise


if __name__ == "__main__":
    main()
