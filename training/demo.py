"""`skewless demo`: the whole offline loop, end to end, with a closing summary."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from skewless.settings import Settings


def run_demo(
    settings: Settings, console: Console, cards: int | None = None, days: int = 60,
    trials: int = 5,
) -> dict[str, Any]:
    """The loop end to end; then, with ``trials`` > 0, a small hyperparameter search whose
    best run meets the fixed-parameter model at the acceptance gate."""
    from skewless.db import upgrade
    from skewless.embedded_redis import redis_for
    from skewless.feast_cli import run_feast
    from skewless.gate import PromotionRefused
    from skewless.registry import Registry, current_user
    from skewless.validations import ValidationFailed, check_expectations
    from training.dataset import TrainingSet, write_training_set
    from training.evaluation.gate import promote
    from training.evaluation.plan import EvaluationPlan
    from training.generate import DEFAULT_CARDS, GenerateConfig, generate, write_generated
    from training.pipeline import PipelinePaths, build_feature_tables
    from training.stats import refresh_stats
    from training.train import train_model

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    dataset_path = settings.var_dir / "datasets" / f"{settings.feature_service}.parquet"
    facts: dict[str, Any] = {}
    timings: list[tuple[str, float]] = []

    with redis_for(settings) as redis_address, Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
        console=console, transient=False,
    ) as progress:
        facts["redis"] = redis_address + ("" if settings.redis else " (embedded)")

        def step(description: str, fn: Callable[[], Any]) -> Any:
            task = progress.add_task(description, total=1)
            started = time.perf_counter()
            result = fn()
            timings.append((description, time.perf_counter() - started))
            progress.update(task, completed=1)
            return result

        data = step("generate transactions and delayed labels", lambda: generate(
            GenerateConfig(cards=cards or DEFAULT_CARDS, days=days, seed=settings.seed, end=now,
                           holdout_days=settings.holdout_days)))
        step("write raw data", lambda: write_generated(data, settings.raw_dir))
        counts = step("compute feature tables (duckdb)",
                      lambda: build_feature_tables(PipelinePaths.from_settings(settings)))
        # Served-feature logs of a previous demo describe data that is about to be replaced.
        shutil.rmtree(settings.data_dir / "feature_logs", ignore_errors=True)
        if (settings.data_dir / "registry.db").is_file():
            # Clear the previous demo's online values: Feast's Redis writer keeps a stored
            # value whose timestamp is not older than the new one, so regenerated data
            # would otherwise be partly shadowed.
            step("feast teardown (previous demo)", lambda: run_feast(settings, "teardown"))
        step("feast apply", lambda: run_feast(settings, "apply"))
        step("metadata database migrations (alembic upgrade)",
             lambda: upgrade(settings.resolved_database_url))
        # The tables must hold what their expectations say before they go online.
        checked, _ = step("expectations (skewless validate)",
                          lambda: check_expectations(settings, "materialize", now))
        if not checked.passed:
            raise ValidationFailed(checked)
        facts["expectations"] = (f"{len(checked.results)} tables passed"
                                 if checked.results else "none declared")
        # The data was just regenerated, so the whole history is materialized (card profiles
        # date from the card's issue, years back): an incremental run would start where a
        # previous demo's left off and skip it.
        start = PipelinePaths.from_settings(settings).earliest_event()
        step("feast materialize", lambda: run_feast(
            settings, "materialize", start.strftime("%Y-%m-%dT%H:%M:%S"),
            now.strftime("%Y-%m-%dT%H:%M:%S")))
        step("catalog statistics (skewless catalog refresh)", lambda: refresh_stats(settings))
        step("point-in-time training set (Feast, duckdb)",
             lambda: write_training_set(settings, dataset_path, cutoff=now))
        ts = TrainingSet.read(dataset_path)
        result = step("train LightGBM", lambda: train_model(
            ts, settings.model_dir, settings.holdout_days, settings.validation_days,
            seed=settings.seed, truth_path=settings.resolved_truth_path,
            dataset_path=dataset_path, evaluation=EvaluationPlan.from_settings(settings)))
        registry = Registry.from_settings(settings)
        row = registry.register(result.directory)
        try:
            _, decision = step("acceptance gate and promotion", lambda: promote(
                settings, registry, row.name, row.version, current_user(), "demo"))
            facts["promotion"] = (f"{row.version} is production: "
                                  + (decision.explain() if decision else "forced"))
        except PromotionRefused as exc:
            facts["promotion"] = f"{exc}; production stays {registry.production_version(row.name)}"
        finally:
            registry.close()
        if trials > 0:
            from training.experiment import run_experiment

            searched = step(f"experiment: {trials} trials (Optuna, validation window)",
                            lambda: run_experiment(settings, dataset_path, trials))
            facts["experiment"] = _promote_best(settings, searched)

    holdout = result.holdout
    facts.update(
        transactions=data.meta["transactions"], fraud_rate=data.meta["fraud_rate"],
        feature_rows=counts, training_rows=len(ts.frame),
        features=len(ts.service.features), metrics=holdout.to_json(),
        model_dir=str(result.directory), dataset=str(dataset_path),
    )
    table = Table(title="Skewless demo", show_header=False)
    table.add_row("transactions", f"{facts['transactions']:,} (fraud {facts['fraud_rate']:.2%})")
    table.add_row("feature rows", ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    table.add_row("training set", f"{facts['training_rows']:,} label events × "
                  f"{facts['features']} features → {dataset_path}")
    auc = f"{holdout.roc_auc:.4f}"
    if holdout.bayes_auc is not None and holdout.auc_to_bayes is not None:
        auc += f" vs Bayes {holdout.bayes_auc:.4f} (ratio {holdout.auc_to_bayes:.3f})"
    table.add_row("expectations", facts["expectations"])
    table.add_row("holdout ROC AUC", auc)
    table.add_row("holdout PR AUC / log loss", f"{holdout.pr_auc:.4f} / {holdout.log_loss:.4f}")
    table.add_row("model", f"{result.directory / 'model.txt'} (+ contract.json)")
    table.add_row("registry", facts["promotion"])
    if "experiment" in facts:
        table.add_row("experiment", facts["experiment"])
    table.add_row("feature repo", f"{settings.repo_path} ({settings.feature_store_yaml.name}, "
                                  f"the {settings.profile} profile)")
    table.add_row("online store", facts["redis"])
    table.add_row("time", ", ".join(f"{d.split(' (')[0]} {s:.1f}s" for d, s in timings))
    console.print(table)
    return facts


def _promote_best(settings: Settings, searched: Any) -> str:
    """The search's best run through the acceptance gate, against the fixed-parameter model
    now in production; what happened, in a line."""
    from skewless.gate import PromotionRefused
    from skewless.registry import Registry, current_user
    from training.evaluation.gate import promote

    experiment, model = searched.experiment, searched.model
    line = (f"{experiment.id}: {len(experiment.runs)} runs, best run {searched.best.id} "
            f"(validation {experiment.metric} {searched.best.value:.4f}), holdout ROC AUC "
            f"{model.holdout.roc_auc:.4f}; ")
    with Registry.from_settings(settings) as registry:
        try:
            _, decision = promote(settings, registry, model.contract.feature_service,
                                  experiment.model_version, current_user(), "demo experiment")
            return line + (f"{experiment.model_version} is production: "
                           + (decision.explain() if decision else "forced"))
        except PromotionRefused as exc:
            return line + f"gate: {exc}"
