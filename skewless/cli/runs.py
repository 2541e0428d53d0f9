"""`skewless runs`: experiments and their runs, from the metadata database."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from skewless.cli.common import Json, console, load_settings

app = typer.Typer(name="runs", help="Experiments and their runs: list, show, compare.",
                  no_args_is_help=True)


def _echo(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, default=str))


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@app.command("list")
def runs_list(
    experiment: Annotated[int | None, typer.Argument(
        help="An experiment's id: its runs (default: every experiment).")] = None,
    as_json: Json = False,
) -> None:
    """Every experiment with its best run, or one experiment's runs."""
    from rich.table import Table

    from skewless.experiments import Experiments

    with Experiments.from_settings(load_settings()) as store:
        if experiment is None:
            rows = [e.summary() for e in store.all()]
            if as_json:
                _echo(rows)
                return
            table = Table(title="Experiments")
            for column in ("id", "name", "state", "metric", "runs (complete/pruned/failed)",
                           "best run", "best", "model version"):
                table.add_column(column)
            for row in rows:
                counts = row["runs"]
                table.add_row(str(row["id"]), row["name"], row["state"], row["metric"],
                              f"{counts['complete']}/{counts['pruned']}/{counts['failed']}",
                              str(row["best_run"] or "-"), _value(row["best_value"]),
                              row["model_version"] or "-")
            console.print(table)
            return
        found = store.get(experiment)
        runs = [r.summary() for r in found.runs]
    if as_json:
        _echo(runs)
        return
    params = list(runs[0]["params"]) if runs else []
    table = Table(title=f"Experiment {found.id}: {found.name} ({found.metric} on validation)")
    for column in ("run", "trial", "state", found.metric, "rounds", "seconds", *params):
        table.add_column(column)
    for run in runs:
        best = run["number"] == found.best_run_number
        table.add_row(str(run["id"]) + (" *" if best else ""), str(run["number"]), run["state"],
                      _value(run["value"]), str(run["metrics"].get("rounds", "-")),
                      f"{run['duration_seconds']:.1f}",
                      *(f"{run['params'].get(p, '-'):.4g}" if isinstance(
                          run["params"].get(p), float) else str(run["params"].get(p, "-"))
                        for p in params))
    console.print(table)


@app.command("show")
def runs_show(
    run: Annotated[int, typer.Argument(help="A run's id.")],
    as_json: Json = False,
) -> None:
    """One run in full: parameters, metrics, the metric per round, and its experiment."""
    from skewless.experiments import Experiments

    with Experiments.from_settings(load_settings()) as store:
        found = store.run(run)
        experiment = store.get(found.experiment_id)
    doc = {**found.details(), "experiment": experiment.summary(),
           "dataset": {"uri": experiment.dataset_uri, "sha256": experiment.dataset_sha256,
                       "rows": experiment.dataset_rows},
           "git_commit": experiment.git_commit,
           "best": found.number == experiment.best_run_number}
    if as_json:
        _echo(doc)
        return
    console.print(f"[bold]run {found.id}[/] — trial {found.number} of experiment "
                  f"{experiment.id} ({experiment.name}): {found.state}, validation "
                  f"{experiment.metric} {_value(found.value)}"
                  + (" [green](best)[/]" if doc["best"] else ""), soft_wrap=True)
    for name, value in found.params.items():
        console.print(f"  {name} = {value}", highlight=False)
    console.print(f"  metrics {found.metrics}; {found.duration_seconds:.1f} s"
                  + (f"; error: {found.error}" if found.error else ""), soft_wrap=True)


@app.command("compare")
def runs_compare(
    runs: Annotated[list[int], typer.Argument(help="Two or more run ids.")],
    as_json: Json = False,
) -> None:
    """Runs side by side: parameters and metrics, with each one's difference to the first."""
    from rich.table import Table

    from skewless.experiments import Experiments

    if len(runs) < 2:
        raise typer.BadParameter("give at least two run ids", param_hint="RUNS")
    with Experiments.from_settings(load_settings()) as store:
        found = store.runs(runs)
    params = list(dict.fromkeys(p for r in found for p in r.params))
    values = [r.value for r in found]
    deltas = [None if v is None or values[0] is None else v - values[0] for v in values]
    by_param = {p: [r.params.get(p) for r in found] for p in params}
    doc = {"runs": [r.summary() for r in found], "params": by_param, "value": values,
           "value_minus_first": deltas}
    if as_json:
        _echo(doc)
        return
    table = Table(title="Runs compared")
    table.add_column("")
    for r in found:
        table.add_column(f"run {r.id} (exp {r.experiment_id} #{r.number})")
    table.add_row("state", *(r.state for r in found))
    table.add_row("value", *(_value(v) for v in values))
    table.add_row("Δ first", *("-" if d is None else f"{d:+.4f}" for d in deltas))
    for p in params:
        table.add_row(p, *(str(v) for v in by_param[p]))
    console.print(table)
