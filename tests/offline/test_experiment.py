"""Experiments: a seeded search that prunes, records every trial, and reproduces itself.

A tenth of the demo's training set (its time windows intact) keeps each trial under a
second. The reproducibility claims are tested as made: the same data set and seed train the
same model text, byte for byte; the same search finds the same best parameters, pruning the
same trials.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skewless.cli import app as cli
from skewless.db import upgrade
from skewless.experiments import Experiments
from skewless.registry import Registry
from skewless.settings import PROJECT_ROOT
from tests.support.experiments import QUICK_SPACE, small_training_set
from training.dataset import TrainingSet
from training.experiment import search
from training.train import dataset_identity, time_split, train_model

TRIALS = 12


@pytest.fixture(scope="module")
def small_set(demo, tmp_path_factory) -> Path:
    return small_training_set(demo.training_set,
                              tmp_path_factory.mktemp("experiment") / "small.parquet")


def test_training_twice_on_the_same_data_and_seed_gives_the_same_model_text(demo, small_set,
                                                                           tmp_path):
    ts = TrainingSet.read(small_set)
    s = demo.settings
    first, second = (train_model(ts, tmp_path / name, s.holdout_days, s.validation_days,
                                 seed=11, dataset_path=small_set) for name in ("a", "b"))
    text = (first.directory / "model.txt").read_bytes()
    assert text == (second.directory / "model.txt").read_bytes()
    other = train_model(ts, tmp_path / "c", s.holdout_days, s.validation_days, seed=12,
                        dataset_path=small_set)
    assert (other.directory / "model.txt").read_bytes() != text  # the seed matters
    training = first.contract.training
    assert training is not None
    assert (training.dataset_sha256, training.dataset_rows) == dataset_identity(small_set)
    head = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
                          capture_output=True, text=True)
    if head.returncode == 0:  # run from a checkout: the commit it ran
        assert training.git_commit and training.git_commit.startswith(head.stdout.strip())
    stored = json.loads((first.directory / "contract.json").read_text())["training"]
    assert stored["dataset_sha256"] == training.dataset_sha256


def test_the_same_seed_searches_the_same_way_and_prunes(demo, small_set):
    ts = TrainingSet.read(small_set)
    split = time_split(ts, demo.settings.holdout_days, demo.settings.validation_days)
    first, second = (search(ts, split, TRIALS, seed=5, space=QUICK_SPACE) for _ in range(2))
    states = [t.state.name for t in first.trials]
    assert states == [t.state.name for t in second.trials]
    assert "PRUNED" in states and "COMPLETE" in states, states
    assert first.best_trial.params == second.best_trial.params
    assert first.best_value == second.best_value
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    # Judged on validation only: each trial's steps are the validation metric per round.
    for trial in first.trials:
        assert trial.user_attrs["steps"]["auc"], trial.number
    third = search(ts, split, 3, seed=6, space=QUICK_SPACE)
    assert [t.params for t in third.trials] != [t.params for t in first.trials[:3]]


def test_an_experiment_records_every_trial_and_registers_its_best_run(demo, small_set,
                                                                     tmp_path, monkeypatch):
    settings = demo.settings.model_copy(update={"var_dir": tmp_path / "var"})
    upgrade(settings.resolved_database_url)
    from training.experiment import run_experiment

    seen: list[dict] = []
    result = run_experiment(settings, small_set, 8, seed=5, name="small search",
                            on_run=seen.append, space=QUICK_SPACE)
    experiment = result.experiment
    assert (experiment.state, experiment.name, len(experiment.runs)) == (
        "complete", "small search", 8)
    assert [r["number"] for r in seen] == list(range(8))
    assert (experiment.dataset_sha256, experiment.dataset_rows) == dataset_identity(small_set)
    assert experiment.windows["holdout_from"] > experiment.windows["validation_from"]
    assert experiment.libraries["optuna"] and experiment.libraries["lightgbm"]
    complete = [r for r in experiment.runs if r.state == "complete"]
    best = max(complete, key=lambda r: r.value or 0)
    assert result.best.id == best.id and experiment.best_run_number == best.number
    for run in experiment.runs:
        assert run.steps["auc"] and run.duration_seconds >= 0 and set(run.params) == {
            "learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction",
            "bagging_fraction", "lambda_l2"}
    assert experiment.importances and set(experiment.importances) <= set(best.params)

    # The candidate names its run, in the registry and in its contract, with its parameters.
    with Registry.from_settings(settings) as registry:
        row = registry.get(demo.settings.feature_service, experiment.model_version)
    assert (row.stage, row.experiment_run_id) == ("candidate", best.id)
    training = row.contract.training
    assert training is not None and training.experiment_run == {
        "id": best.id, "experiment": experiment.id, "number": best.number}
    for name, value in best.params.items():
        assert row.parameters[name] == value
    assert experiment.holdout and experiment.holdout["roc_auc"] == row.metrics["holdout"][
        "roc_auc"]

    # The CLI reads them back.
    for key in [k for k in os.environ if k.startswith("SKEWLESS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SKEWLESS_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("SKEWLESS_REPO_PATH", str(settings.repo_path))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    listed = json.loads(runner.invoke(cli, ["runs", "list", "--json"]).stdout)
    assert [(e["id"], e["best_run"], e["model_version"]) for e in listed] == [
        (experiment.id, best.id, experiment.model_version)]
    runs = json.loads(runner.invoke(cli, ["runs", "list", str(experiment.id), "--json"]).stdout)
    assert [r["id"] for r in runs] == [r.id for r in experiment.runs]
    shown = json.loads(runner.invoke(cli, ["runs", "show", str(best.id), "--json"]).stdout)
    assert shown["best"] and shown["params"] == best.params and shown["steps"]["auc"]
    other = next(r for r in experiment.runs if r.id != best.id and r.value is not None)
    compared = json.loads(runner.invoke(
        cli, ["runs", "compare", str(best.id), str(other.id), "--json"]).stdout)
    assert compared["value"] == [best.value, other.value]
    assert compared["value_minus_first"][1] == pytest.approx(other.value - best.value)
    missing = runner.invoke(cli, ["runs", "show", "999999"])
    assert missing.exit_code == 1 and "no experiment run 999999" in str(missing.exception)

    with Experiments.from_settings(settings) as store:
        assert store.get(experiment.id).summary()["runs"]["complete"] == len(complete)
