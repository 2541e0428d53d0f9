"""The pipeline, stage by stage: data, features, the online store, training sets, models,
backfill scores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from skewless.cli.common import console, load_settings, open_registry, parse_time
from skewless.cli.quality import AcceptFailures, Reason, expectations_gate

if TYPE_CHECKING:
    from skewless.contract import ModelContract
    from training.mlflow_export import Export

app = typer.Typer()


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
    disparity: Annotated[float, typer.Option(
        min=0.0, help="Give the 18-29 age band wider amount swings and more online payments "
        "(0: no difference).")] = 0.0,
    out: Annotated[Path | None, typer.Option(help="Output folder (default repo data/raw).")] = None,
) -> None:
    """Generate seeded card transactions, delayed fraud labels and the Bayes AUC."""
    from training.generate import GenerateConfig, scaled_cards, write_generated
    from training.generate import generate as run

    settings = load_settings()
    if cards is not None and scale is not None:
        raise typer.BadParameter("give --cards or --scale, not both", param_hint="--scale")
    n_cards = cards if cards is not None else scaled_cards(scale or 1.0)
    if n_cards < 1 or days < 1:
        raise typer.BadParameter("cards and days must be positive", param_hint="--cards/--days")
    config = GenerateConfig(
        cards=n_cards, days=days, merchants=merchants,
        seed=settings.seed if seed is None else seed, end=parse_time(end, "--end"),
        drift_day=drift_day, holdout_days=settings.holdout_days, disparity=disparity,
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

    settings = load_settings()
    counts = build_feature_tables(PipelinePaths.from_settings(settings),
                                  as_of=parse_time(as_of, "--as-of"))
    for name, n in counts.items():
        console.print(f"[green]{name}[/]: {n:,} rows → {settings.data_dir / (name + '.parquet')}")


@app.command()
def apply() -> None:
    """`feast apply` on the repo, against the configured or an embedded Redis."""
    from skewless.embedded_redis import redis_for
    from skewless.feast_cli import run_feast

    settings = load_settings()
    with redis_for(settings):
        console.print(run_feast(settings, "apply").stdout.strip().splitlines()[-1])


@app.command()
def materialize(
    end: Annotated[str, typer.Option(help="Materialize up to this time.")] = "now",
    accept_failures: AcceptFailures = False,
    reason: Reason = None,
) -> None:
    """Check the feature tables' expectations (a failure stops here), then `feast
    materialize-incremental` up to END into the online store."""
    from skewless.embedded_redis import redis_for
    from skewless.feast_cli import run_feast

    settings = load_settings()
    stamp = parse_time(end, "--end")
    assert stamp is not None
    # Freshness is judged against END: what is being materialized must be recent by then.
    expectations_gate("materialize", stamp, None, accept_failures, reason)
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
    accept_failures: AcceptFailures = False,
    reason: Reason = None,
) -> None:
    """Build a training set: point-in-time through Feast (after checking the expectations of
    the tables it reads; a failure stops here), or from the served-feature log."""
    from training.dataset import newest_event, write_from_logs, write_training_set

    settings = load_settings()
    stamp = parse_time(cutoff, "--cutoff")
    assert stamp is not None
    if not from_logs:
        if since or until or log_dir:
            raise typer.BadParameter("--since, --until and --log-dir need --from-logs",
                                     param_hint="--from-logs")
        # Freshness is judged against the newest label event the set takes: a set built today
        # from old events has features as old as its events, which is right.
        expectations_gate("dataset", newest_event(settings, stamp) or stamp, None,
                          accept_failures, reason, service=settings.feature_service)
        rows = write_training_set(settings, output, cutoff=stamp)
        console.print(f"[green]training set[/]: {rows:,} label events → {output}")
        return
    if accept_failures or reason:
        raise typer.BadParameter("--accept-failures and --reason go with the point-in-time "
                                 "set: a set from the served log is not checked against the "
                                 "tables' expectations", param_hint="--accept-failures")
    console.print("[dim]expectations not checked: a set from the served log holds what was "
                  "served, checked when it was materialized[/]", highlight=False)
    counts = write_from_logs(settings, output, stamp, parse_time(since, "--since"),
                             parse_time(until, "--until"), log_dir)
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
    from training.dataset import TrainingSet
    from training.evaluation.plan import EvaluationPlan
    from training.train import train_model

    settings = load_settings()
    if not dataset.is_file():
        raise typer.BadParameter(f"{dataset} does not exist", param_hint="--dataset")
    training_set = TrainingSet.read(dataset)
    # Opened before training: fail fast if the database is not migrated.
    with open_registry(settings) as registry:
        result = train_model(
            training_set, settings.model_dir, settings.holdout_days,
            settings.validation_days, seed=settings.seed,
            truth_path=settings.resolved_truth_path, dataset_path=dataset,
            evaluation=EvaluationPlan.from_settings(settings),
        )
        row = registry.register(result.directory)
    m = result.holdout
    bayes = (f" (Bayes {m.bayes_auc:.4f}, ratio {m.auc_to_bayes:.3f})"
             if m.bayes_auc is not None and m.auc_to_bayes is not None else "")
    console.print(f"[green]model[/] {row.name} {row.version}: holdout ROC AUC "
                  f"{m.roc_auc:.4f}{bayes}, PR AUC {m.pr_auc:.4f} → {result.directory}; "
                  f"registered as a candidate (promote: skewless models promote {row.name} "
                  f"{row.version})", soft_wrap=True)
    _print_yardsticks(result.contract)


def _print_yardsticks(contract: ModelContract) -> None:
    """The baselines' holdout metrics beside the model's, and the decision threshold."""
    assert contract.metrics is not None
    model = contract.metrics.holdout
    for name, baseline in contract.metrics.baselines.items():
        console.print(f"  baseline {name}: holdout ROC AUC {baseline.roc_auc:.4f} (model "
                      f"{model.roc_auc:.4f}), PR AUC {baseline.pr_auc or 0:.4f} (model "
                      f"{model.pr_auc or 0:.4f}); {baseline.description}, "
                      f"{baseline.train_rows:,} train rows", soft_wrap=True, highlight=False)
    slices = contract.metrics.slices
    if slices is not None and slices.cells:
        # The weakest cells first: what a reviewer reads before promoting.
        judged = sorted((c for c in slices.cells if c.roc_auc is not None),
                        key=lambda c: c.roc_auc or 0.0)
        shown = ", ".join(f"{c.column} = {c.value} {c.roc_auc:.4f} ({c.rows:,} rows)"
                          for c in judged[:3])
        console.print(f"  slices: {len(slices.cells)} cells; lowest ROC AUC: {shown}",
                      soft_wrap=True, highlight=False)
    inclusion = contract.metrics.inclusion
    for column, group in (inclusion.groups.items() if inclusion else []):
        ratios = ", ".join(f"{rate} {ratio:.3f}" for rate, ratio in group.ratios.items()
                           if ratio is not None)
        console.print(f"  inclusion {column}: smallest ÷ largest group {ratios}",
                      soft_wrap=True, highlight=False)
    decision = contract.decision
    if decision is None:
        console.print("  decision: no cost configured (SKEWLESS_DECISION_AMOUNT_COLUMN or "
                      "SKEWLESS_DECISION_MISSED_COST); the predictor flags at "
                      "SKEWLESS_DECISION_THRESHOLD", soft_wrap=True, highlight=False)
        return
    holdout = decision.holdout
    interval = holdout.expected_cost_per_event_interval
    console.print(
        f"  decision: flag at score ≥ {decision.threshold:.4f} (least expected cost on "
        f"{decision.chosen_on}); holdout: {holdout.flagged:,} of {holdout.rows:,} flagged, "
        f"{holdout.missed_positives:,} positives missed, cost per event "
        f"{holdout.expected_cost_per_event:.4f}"
        + (f" (95% {interval.low:.4f}–{interval.high:.4f})" if interval else ""),
        soft_wrap=True, highlight=False)


def _print_mlflow(exporter: Export) -> None:
    from rich.markup import escape

    described = exporter.describe()
    if described is not None:
        colour = "yellow" if exporter.error else "green"
        console.print(f"[{colour}]mlflow[/]: {escape(described)}", soft_wrap=True,
                      highlight=False)


@app.command()
def experiment(
    dataset: Annotated[Path, typer.Option(help="A training set written by `skewless dataset`.")],
    trials: Annotated[int, typer.Option(min=1, max=10_000, help="Trials of the search.")] = 30,
    seed: Annotated[int | None, typer.Option(help="Sampler and LightGBM seed (default "
                                                  "SKEWLESS_SEED).")] = None,
    name: Annotated[str | None, typer.Option(help="The experiment's name.")] = None,
) -> None:
    """Search LightGBM's parameters (Optuna, seeded TPE, pruning) on the validation window;
    record every trial; retrain the best and register it as a candidate naming its run."""
    from training.experiment import run_experiment

    settings = load_settings()
    if not dataset.is_file():
        raise typer.BadParameter(f"{dataset} does not exist", param_hint="--dataset")

    def progress(run: dict) -> None:
        value = "-" if run["value"] is None else f"{run['value']:.4f}"
        console.print(f"  trial {run['number']:>3} {run['state']:<8} {settings.gate_metric} "
                      f"{value}  {run['metrics'].get('rounds', 0):>4} rounds  "
                      f"{run['duration_seconds']:.1f} s", highlight=False)

    result = run_experiment(settings, dataset, trials, seed=seed, name=name, on_run=progress)
    found, best, m = result.experiment, result.best, result.model.holdout
    console.print(
        f"[green]experiment {found.id}[/] ({found.name}): {len(found.runs)} runs in "
        f"{result.seconds:.0f} s, best run {best.id} (trial {best.number}) validation "
        f"{found.metric} {best.value:.4f}; model {result.model.contract.feature_service} "
        f"{found.model_version}: holdout ROC AUC {m.roc_auc:.4f}, registered as a candidate "
        f"(compare: skewless runs show {best.id}; promote: skewless models promote "
        f"{result.model.contract.feature_service} {found.model_version})", soft_wrap=True)
    _print_mlflow(result.mlflow)


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

    settings = load_settings()
    summary = score_events(settings, input_path, output, model_dir=model)
    console.print(f"[green]scored[/] {summary.rows:,} events with model {summary.model_version} "
                  f"in {summary.seconds:.1f} s → {summary.output}", soft_wrap=True)
