"""Experiment benchmark: trials per minute of `skewless experiment`, and what the search buys.

For each size the world of ``bench/offline.py`` (seeded raw data, feature tables, `feast
apply` against a private redis-server, the point-in-time training set), then, each in its own
child process so that wall time and peak RSS belong to it alone:

  fixed parameters   training.train.train_model: the model `skewless train` fits
  search             training.experiment.run_experiment with N trials: every trial recorded
                     in a throwaway SQLite metadata database, the best retrained, registered

Both read the same training set with the same seed. The table sets the fixed model's holdout
ROC AUC beside the best run's retrained model and the Bayes AUC (the true fraud
probabilities' AUC on the same holdout rows, the ceiling), with trials per minute, wall time
and peak RSS.

    .venv/bin/python bench/experiment.py [--sizes demo,10m] [--trials demo=20,10m=5] [--seed 7]
                                         [--work DIR] [--keep] [--timeout S]

A world takes minutes to build at 10M: ``--work DIR`` keeps each size's world in DIR/SIZE and
reuses it on the next run (``--keep`` keeps the temp directory, which can then be given as
``--work``). Results are printed and merged (by size) into ``var/bench/experiment.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from offline import (
    DAYS,
    END,
    SIZES,
    STAGES,
    _git_state,
    _rusage_mb,
    copy_repo,
    run_stage,
    run_stage_child,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "var" / "bench" / "experiment.json"
TRIALS = {"demo": 20, "10m": 5}
HOLDOUT_DAYS = 7.0
VALIDATION_DAYS = 7.0
METRIC = "roc_auc"
WORLD_FILE = "world.json"
TRAINING_SET = "training_set.parquet"


# --------------------------------------------------------------------------------------------
# Child side: one measured stage per process.
# --------------------------------------------------------------------------------------------


def _settings(args: dict[str, Any]):
    from skewless.settings import Settings

    run = Path(args["run"])
    # Everything that matters explicit: neither a .env nor the shell's SKEWLESS_* may send
    # the bench's runs to another database or change the split, the metric or the seed.
    return Settings(repo_path=Path(args["repo"]), var_dir=run, redis=None, events_path=None,
                    labels_path=None, truth_path=None, feature_service="fraud_model_v1",
                    database_url=f"sqlite:///{run / 'skewless.db'}", feature_log_dir=None,
                    holdout_days=HOLDOUT_DAYS, validation_days=VALIDATION_DAYS,
                    gate_metric=METRIC, seed=args["seed"])


def _validation_auc(ts, booster, categories: dict[str, list[str]]) -> float:
    """ROC AUC on the validation window at the best round (what the search maximises)."""
    from sklearn.metrics import roc_auc_score

    from training.train import time_split, to_matrix

    split = time_split(ts, HOLDOUT_DAYS, VALIDATION_DAYS)
    scores = booster.predict(to_matrix(split.validation, ts.service.features, categories),
                             num_iteration=booster.best_iteration)
    return float(roc_auc_score(split.validation[ts.label_column].to_numpy(), scores))


def _holdout(model) -> dict[str, Any]:
    h = model.holdout
    return {"rows": h.rows, "positives": h.positives, "roc_auc": h.roc_auc, "pr_auc": h.pr_auc,
            "bayes_auc": h.bayes_auc, "auc_to_bayes": h.auc_to_bayes,
            "best_iteration": model.contract.parameters.get("best_iteration")}


def stage_train_fixed(args: dict[str, Any]) -> dict[str, Any]:
    """`skewless train`'s model: the fixed parameters, on the same training set and seed."""
    from training.dataset import TrainingSet
    from training.train import train_model

    settings = _settings(args)
    dataset = Path(args["dataset"])
    started = time.perf_counter()
    ts = TrainingSet.read(dataset)
    read_seconds = time.perf_counter() - started
    model = train_model(ts, settings.model_dir, settings.holdout_days, settings.validation_days,
                        seed=args["seed"], truth_path=settings.resolved_truth_path,
                        dataset_path=dataset)
    seconds = time.perf_counter() - started
    rusage = _rusage_mb()  # before the validation scoring below, which is not the stage's
    return {"seconds": seconds, "rusage": rusage, "rows_in": len(ts.frame), "rows_out": None,
            "detail": {"read_seconds": round(read_seconds, 3),
                       "train_seconds": round(seconds - read_seconds, 3),
                       "rows": model.contract.training.rows if model.contract.training else None,
                       "validation_auc": _validation_auc(ts, model.booster,
                                                         model.contract.categories),
                       "holdout": _holdout(model)}}


def stage_experiment(args: dict[str, Any]) -> dict[str, Any]:
    """run_experiment with N trials against a fresh SQLite metadata database."""
    from skewless.db import upgrade
    from training.experiment import run_experiment

    settings = _settings(args)
    progress = Path(args["progress"])
    started = time.perf_counter()
    upgrade(settings.resolved_database_url)
    migrate_seconds = time.perf_counter() - started
    runs: list[dict[str, Any]] = []

    def on_run(fields: dict[str, Any]) -> None:
        runs.append({"number": fields["number"], "state": fields["state"],
                     "value": fields["value"], "rounds": fields["metrics"].get("rounds"),
                     "best_iteration": fields["metrics"].get("best_iteration"),
                     "seconds": round(fields["duration_seconds"], 3),
                     "started_at": fields["started_at"].isoformat(),
                     "finished_at": fields["finished_at"].isoformat(),
                     "params": fields["params"], "error": fields["error"]})
        # Read by the parent when it stops the stage (timeout, memory): the trials so far.
        progress.write_text(json.dumps({"elapsed": round(time.perf_counter() - started, 2),
                                        "runs": runs, "rss_mb": _rusage_mb()["self_mb"]}))

    started = time.perf_counter()
    result = run_experiment(settings, Path(args["dataset"]), args["trials"], seed=args["seed"],
                            name=f"bench {args['size']}", on_run=on_run)
    seconds = time.perf_counter() - started
    rusage = _rusage_mb()
    from training.dataset import TrainingSet  # after the clock: validation AUC check only

    ts = TrainingSet.read(Path(args["dataset"]))
    return {"seconds": seconds, "rusage": rusage, "rows_in": len(ts.frame), "rows_out": None,
            "detail": {"migrate_seconds": round(migrate_seconds, 3),
                       "experiment_seconds": round(result.seconds, 3), "runs": runs,
                       "best": {"number": result.best.number, "value": result.best.value,
                                "params": result.best.params},
                       "validation_auc": _validation_auc(ts, result.model.booster,
                                                         result.model.contract.categories),
                       "holdout": _holdout(result.model),
                       "importances": result.experiment.importances,
                       "model_version": result.experiment.model_version}}


CHILD_STAGES = {**STAGES, "train_fixed": stage_train_fixed, "experiment": stage_experiment}


# --------------------------------------------------------------------------------------------
# Parent side: worlds, the two measured stages, tables.
# --------------------------------------------------------------------------------------------


def _stage(name: str, label: str, args: dict[str, Any], work: Path, console,
           timeout: float | None = None, memory_limit_mb: float | None = None) -> dict[str, Any]:
    console.print(f"[dim]{label} …[/]")
    load = os.getloadavg()
    record = run_stage(name, label, args, work, timeout, memory_limit_mb,
                       script=Path(__file__).resolve())
    record["load_before"] = [round(x, 2) for x in load]
    record["load_after"] = [round(x, 2) for x in os.getloadavg()]
    shown = f"{record['seconds']} s" if record["seconds"] is not None else "—"
    console.print(f"[dim]{label}: {record['status']}, {shown}, "
                  f"{record['peak_rss_mb']:,.0f} MB peak RSS[/]")
    if record["status"] == "error":
        console.print(f"[red]{label} failed[/]:")
        console.print(record["detail"]["log_tail"], markup=False, highlight=False)
    return record


def build_world(size: str, world: Path, memory_limit_mb: float, console) -> dict[str, Any] | None:
    """The offline bench's world in ``world`` (repo copy, data, apply, training set), or the
    one already there when its description matches; None when a stage failed."""
    cards = SIZES[size]
    described = {"size": size, "cards": cards, "days": DAYS, "end": END.isoformat()}
    marker = world / WORLD_FILE
    if marker.is_file():
        kept = json.loads(marker.read_text())
        if {k: kept.get(k) for k in described} == described and (
                world / "var" / TRAINING_SET).is_file():
            head = _git_state()["head"]
            if kept.get("git", {}).get("head") != head:
                console.print(f"[yellow]{size}: the kept world was built at "
                              f"{kept.get('git', {}).get('head')}, not at HEAD {head}[/]")
            console.print(f"[dim]{size}: reusing the world in {world} "
                          f"(built {kept['built_at']})[/]")
            return {**kept, "reused": True}
        raise SystemExit(f"{world} holds another world ({marker}); give another --work")
    if world.exists() and any(world.iterdir()):
        raise SystemExit(f"{world} is not empty and holds no {WORLD_FILE}; give another --work")
    world.mkdir(parents=True, exist_ok=True)
    logs = world / "build"
    logs.mkdir()
    repo = copy_repo(world / "repo")
    args = {"repo": str(repo), "var": str(world / "var")}
    stages: list[dict[str, Any]] = []
    for name, label, stage_args in (("generate", "generate", {"repo": str(repo), "cards": cards}),
                                    ("pipeline", "pipeline", {"repo": str(repo)}),
                                    ("apply", "apply", args),
                                    ("training_duckdb", "training set", args)):
        record = _stage(name, f"{size}: {label}", stage_args, logs, console,
                        memory_limit_mb=memory_limit_mb)
        record["stage"] = label
        stages.append(record)
        if record["status"] != "ok":
            return None
    doc = {**described, "transactions": stages[0]["rows_out"],
           "training_set_rows": stages[-1]["rows_out"], "built_at": datetime.now(UTC).isoformat(),
           "git": _git_state(),
           "stages": [{k: s.get(k) for k in ("stage", "seconds", "peak_rss_mb", "rows_out")}
                      for s in stages]}
    marker.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return {**doc, "reused": False}


def _search_figures(runs: list[dict[str, Any]], trials: int) -> dict[str, Any]:
    """Trials per minute over the search (first trial's start to last trial's end), counts
    by state and the mean seconds of a trial in each state."""
    if not runs:
        return {"trials_done": 0, "trials_asked": trials}
    first = min(datetime.fromisoformat(r["started_at"]) for r in runs)
    last = max(datetime.fromisoformat(r["finished_at"]) for r in runs)
    search_seconds = (last - first).total_seconds()
    counts = {state: sum(1 for r in runs if r["state"] == state)
              for state in ("complete", "pruned", "failed")}
    mean = {state: round(sum(r["seconds"] for r in runs if r["state"] == state) / n, 2)
            for state, n in counts.items() if n}
    return {"trials_asked": trials, "trials_done": len(runs), "counts": counts,
            "search_seconds": round(search_seconds, 2),
            "trials_per_minute": round(len(runs) / search_seconds * 60, 2) if search_seconds else None,
            "mean_trial_seconds": mean,
            "rounds": {"sum": sum(r["rounds"] or 0 for r in runs),
                       "max": max(r["rounds"] or 0 for r in runs)}}


def bench_size(size: str, world: Path, trials: int, seed: int, timeout: float | None,
               memory_limit_mb: float, keep_runs: bool, console) -> dict[str, Any]:
    built = build_world(size, world, memory_limit_mb, console)
    result: dict[str, Any] = {"size": size, "cards": SIZES[size], "days": DAYS,
                              "end": END.isoformat(), "trials": trials, "seed": seed,
                              "measured_at": datetime.now(UTC).isoformat(), "world": built}
    if built is None:
        result["error"] = "the world could not be built (see the stages above)"
        return result
    runs = world / "runs" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    runs.mkdir(parents=True)
    common = {"repo": str(world / "repo"), "dataset": str(world / "var" / TRAINING_SET),
              "seed": seed, "size": size}
    try:
        fixed = _stage("train_fixed", f"{size}: fixed parameters",
                       {**common, "run": str(runs / "fixed")}, runs, console, timeout,
                       memory_limit_mb)
        search = _stage("experiment", f"{size}: search ({trials} trials)",
                        {**common, "run": str(runs / "experiment"), "trials": trials}, runs,
                        console, timeout, memory_limit_mb)
    finally:
        if keep_runs:
            console.print(f"[yellow]kept[/] {runs}")
        else:
            shutil.rmtree(runs, ignore_errors=True)
    detail = search.get("detail", {})
    trial_runs = detail.get("runs") or detail.get("progress_when_stopped", {}).get("runs", [])
    search["search"] = _search_figures(trial_runs, trials)
    result.update(fixed=fixed, experiment=search)
    return result


def _f(value: Any, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _wall(stage: dict[str, Any]) -> str:
    if stage["status"] == "ok":
        return f"{stage['seconds']:.1f}"
    if stage["status"] == "error":
        return "error"
    return f"{stage['status']} @{stage['seconds']:.0f}"


def _load(stage: dict[str, Any]) -> str:
    return f"{stage['load_before'][0]:.1f}→{stage['load_after'][0]:.1f}"


def report(results: dict[str, Any], console) -> None:
    from rich.table import Table

    worlds = Table(title="Worlds (bench/offline.py's: seeded data, feature tables, training set)")
    for col in ("size", "transactions", "training set rows", "built"):
        worlds.add_column(col, justify="left" if col in ("size", "built") else "right")
    for size, res in results.items():
        w = res.get("world") or {}
        if not w:
            worlds.add_row(size, "—", "—", "failed")
            continue
        built = (f"kept, built {w['built_at'][:16]}" if w.get("reused") else
                 ", ".join(f"{s['stage']} {s['seconds']:.1f} s / {s['peak_rss_mb']:,.0f} MB"
                           for s in w["stages"]))
        worlds.add_row(size, f"{w['transactions']:,}", f"{w['training_set_rows']:,}", built)
    console.print(worlds)

    quality = Table(title="Fixed parameters vs the search's best (holdout never seen by the search)")
    for col in ("size", "model", "valid. AUC", "holdout AUC", "holdout PR AUC", "Bayes AUC",
                "AUC/Bayes", "best round", "wall s", "peak RSS MB", "load 1m"):
        quality.add_column(col, justify="left" if col in ("size", "model") else "right")
    for size, res in results.items():
        if "fixed" not in res:
            continue
        for label, stage in (("fixed parameters", res["fixed"]),
                             (f"best of {res['trials']} trials", res["experiment"])):
            d = stage.get("detail", {})
            h = d.get("holdout", {})
            quality.add_row(size, label, _f(d.get("validation_auc")), _f(h.get("roc_auc")),
                            _f(h.get("pr_auc")), _f(h.get("bayes_auc")),
                            _f(h.get("auc_to_bayes"), 3), str(h.get("best_iteration", "—")),
                            _wall(stage), f"{stage['peak_rss_mb']:,.0f}", _load(stage))
        quality.add_section()
    console.print(quality)

    speed = Table(title="Search throughput (trials one at a time, LightGBM on 2 threads)")
    for col in ("size", "trials", "complete/pruned/failed", "trials/min", "search s",
                "s/complete", "s/pruned", "rounds", "wall s", "peak RSS MB"):
        speed.add_column(col, justify="left" if col == "size" else "right")
    for size, res in results.items():
        if "experiment" not in res:
            continue
        stage, s = res["experiment"], res["experiment"]["search"]
        counts = s.get("counts", {})
        mean = s.get("mean_trial_seconds", {})
        speed.add_row(size, f"{s['trials_done']}/{s['trials_asked']}",
                      "/".join(str(counts.get(k, 0)) for k in ("complete", "pruned", "failed")),
                      _f(s.get("trials_per_minute"), 2), _f(s.get("search_seconds"), 1),
                      _f(mean.get("complete"), 1), _f(mean.get("pruned"), 1),
                      str(s.get("rounds", {}).get("sum", "—")), _wall(stage),
                      f"{stage['peak_rss_mb']:,.0f}")
    console.print(speed)
    console.print("[dim]wall s: the stage's own work in its child process (reading the training "
                  "set, training; for the search also every trial recorded, the best retrained "
                  "and registered; the database migration and imports excluded). trials/min: "
                  "trials ÷ (first trial's start → last trial's end). valid. AUC: the "
                  "validation window at the best round, what the search maximises. Bayes AUC: "
                  "the true fraud probabilities on the same holdout rows. load 1m: the 1-minute "
                  "load average before → after the stage (2 CPUs).[/]")
    for size, res in results.items():
        best = res.get("experiment", {}).get("detail", {}).get("best")
        if best:
            params = ", ".join(f"{k} {v:.4g}" for k, v in best["params"].items())
            console.print(f"[dim]{size} best: trial {best['number']}: {params}[/]")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("feast", "lightgbm", "optuna", "optuna-integration", "duckdb", "pandas",
                "pyarrow", "numpy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _trials(text: str, sizes: list[str], parser: argparse.ArgumentParser) -> dict[str, int]:
    """``N`` (every size) or ``size=N,…`` (the others keep their default)."""
    try:
        if "=" not in text:
            return {size: int(text) for size in sizes}
        given = {k.strip(): int(v) for k, v in (part.split("=", 1) for part in text.split(","))}
    except ValueError:
        parser.error(f"--trials: {text!r} is neither N nor size=N,…")
    unknown = set(given) - set(SIZES)
    if unknown:
        parser.error(f"--trials: unknown size(s) {', '.join(sorted(unknown))}")
    return {size: given.get(size, TRIALS[size]) for size in sizes}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_stage":
        return run_stage_child(*argv[1:4], stages=CHILD_STAGES)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="demo,10m", help="comma-separated: demo, 10m")
    parser.add_argument("--trials", default=None,
                        help="trials per size: N, or size=N,… (default demo=20,10m=5)")
    parser.add_argument("--seed", type=int, default=7, help="search and LightGBM seed (7)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep each size's world in WORK/SIZE and reuse it when there")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp directory (worlds and the runs' models and "
                        "databases); give it as --work next time")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop a measured stage after this many seconds (default: none); "
                        "a stopped search reports the trials it finished")
    parser.add_argument("--memory-limit-gb", type=float, default=None,
                        help="stop a stage whose process tree exceeds this RSS "
                        "(default: 2/3 of RAM, at most 16)")
    opts = parser.parse_args(argv)
    sizes = [s.strip() for s in opts.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {', '.join(unknown)}; choose from {', '.join(SIZES)}")
    trials = _trials(opts.trials, sizes, parser) if opts.trials else {s: TRIALS[s] for s in sizes}
    if any(n < 1 for n in trials.values()):
        parser.error("--trials: at least 1")

    import psutil
    from rich.console import Console

    os.environ["FEAST_USAGE"] = "False"
    console = Console(width=None if sys.stdout.isatty() else 150)
    limit_gb = opts.memory_limit_gb or min(16.0, psutil.virtual_memory().total / 1024**3 * 2 / 3)
    git_state = _git_state()
    root = opts.work.resolve() if opts.work else Path(tempfile.mkdtemp(
        prefix="skewless-bench-experiment-"))
    results: dict[str, Any] = {}
    try:
        for size in sizes:
            results[size] = bench_size(size, root / size, trials[size], opts.seed, opts.timeout,
                                       limit_gb * 1024, opts.keep, console)
            results[size]["git"] = git_state
    finally:
        if opts.work is None and not opts.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif opts.work is None:
            console.print(f"[yellow]kept[/] {root} (reuse it: --work {root})")
    report(results, console)
    previous: dict[str, Any] = {}
    if RESULTS.is_file():
        try:
            previous = json.loads(RESULTS.read_text()).get("sizes", {})
        except (json.JSONDecodeError, AttributeError):
            previous = {}
    doc = {
        "machine": {"cpus": os.cpu_count(),
                    "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
                    "platform": platform.platform(), "load_at_end": list(os.getloadavg())},
        "versions": _versions(),
        "config": {"holdout_days": HOLDOUT_DAYS, "validation_days": VALIDATION_DAYS,
                   "metric": METRIC, "seed": opts.seed, "trials": trials,
                   "timeout_seconds": opts.timeout, "memory_limit_gb": round(limit_gb, 1),
                   "work": str(opts.work) if opts.work else None,
                   # OpenMP's waiting decides LightGBM's speed on a busy machine.
                   "environment": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY",
                                                                 "OMP_NUM_THREADS")}},
        "sizes": {**previous, **results},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    console.print(f"[green]results[/] → {RESULTS.relative_to(ROOT)}")
    failed = [size for size, res in results.items()
              if "error" in res or any(res[k]["status"] == "error" for k in ("fixed", "experiment"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
