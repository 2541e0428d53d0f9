"""`skewless worker` and `skewless jobs`: the loop's jobs on schedules, and their record."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from skewless.cli.common import Json, console, load_settings, parse_time

app = typer.Typer(name="jobs", no_args_is_help=True,
                  help="The loop's jobs: their schedules and the runs the workers recorded.")
worker_app = typer.Typer()

JobName = Annotated[str, typer.Argument(help="materialize, skew-check, monitor, rollout, "
                                              "logs-prune or catalog-refresh.")]


def _check_redis() -> None:
    """The jobs read and write the online store the service reads: a private server started
    per command would be thrown away with it."""
    from skewless.embedded_redis import running_detached
    from skewless.errors import InvalidInput

    settings = load_settings()
    if not settings.redis and not running_detached(settings):
        raise InvalidInput("the jobs read and write the service's Redis: set SKEWLESS_REDIS "
                           "(or start one with `skewless redis start`)")


def _log_to_stderr() -> None:
    """The worker's own lines (its jobs' output goes to their logs), not its libraries'."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("skewless.worker").setLevel(logging.INFO)
    # The scheduler's own warnings (a skipped instance, a misfire) are the worker's lines too.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


@worker_app.command()
def worker() -> None:
    """Run the loop's jobs on their schedules (SKEWLESS_SCHEDULE_*) until SIGTERM: each slot
    once across all workers, each run recorded (`skewless jobs list`), metrics on
    SKEWLESS_WORKER_METRICS_PORT."""
    from skewless.worker import run_worker

    _log_to_stderr()
    _check_redis()
    run_worker(load_settings())


@app.command("schedule")
def jobs_schedule(as_json: Json = False) -> None:
    """Each job's schedule, expected period and next slot."""
    import json
    from datetime import UTC, datetime

    from rich.table import Table

    from skewless.jobs import JOBS
    from skewless.schedules import parse_schedule, period_of

    settings = load_settings()
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for job in JOBS.values():
        trigger = parse_schedule(job.schedule(settings))
        nxt = trigger.get_next_fire_time(None, now) if trigger else None
        rows.append({"job": job.name, "schedule": job.schedule(settings),
                     "setting": f"SKEWLESS_{job.setting.upper()}",
                     "period_seconds": period_of(trigger, now) if trigger else None,
                     "next": nxt.isoformat() if nxt else None, "does": job.help})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="Jobs")
    for column in ("job", "schedule", "next slot", "does"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["job"], row["schedule"], (row["next"] or "-")[:19], row["does"])
    console.print(table)


@app.command("list")
def jobs_list(
    job: Annotated[str | None, typer.Option(help="Only this job's runs.")] = None,
    outcome: Annotated[str | None, typer.Option(help="Only runs with this outcome.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
    as_json: Json = False,
) -> None:
    """The latest runs first: job, slot, worker, outcome, attempts, duration."""
    import json

    from rich.table import Table

    from skewless.jobs import OUTCOMES, JobRuns, job_named

    if job is not None:
        job_named(job)
    if outcome is not None and outcome not in OUTCOMES:
        raise typer.BadParameter(f"one of {', '.join(OUTCOMES)}", param_hint="--outcome")
    with JobRuns.from_settings(load_settings()) as store:
        runs = store.runs(job, limit, outcome)
    if as_json:
        typer.echo(json.dumps([run.to_json() for run in runs], indent=2))
        return
    table = Table(title="Job runs")
    for column in ("id", "job", "slot", "worker", "outcome", "attempts", "seconds", "error"):
        table.add_column(column)
    for run in runs:
        style = {"succeeded": "green", "running": "cyan", "skipped": "dim"}.get(run.outcome, "red")
        table.add_row(str(run.id), run.job, run.slot.isoformat()[:19], run.worker,
                      f"[{style}]{run.outcome}[/]", str(run.attempts),
                      f"{run.seconds:.1f}" if run.seconds is not None else "-",
                      (run.error or "").splitlines()[-1][:80] if run.error else "")
    console.print(table)


@app.command("show")
def jobs_show(
    run_id: Annotated[int, typer.Argument(help="The run's id (`skewless jobs list`).")],
    show_log: Annotated[bool, typer.Option("--log", help="Print its last attempt's log.")]
    = False,
    as_json: Json = False,
) -> None:
    """One run: its slot, worker, times, outcome, error, what it produced, its log."""
    import json

    from skewless.jobs import JobRuns
    from skewless.worker import job_log

    with JobRuns.from_settings(load_settings()) as store:
        run = store.get(run_id)
    doc = run.to_json()
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    for key, value in doc.items():
        if key not in ("error", "produced") and value is not None:
            console.print(f"[bold]{key}[/]: {value}", highlight=False)
    for key, value in (doc["produced"] or {}).items():
        console.print(f"[bold]produced {key}[/]: {value}", highlight=False)
    if run.error:
        console.print(f"[bold]error[/]:\n{run.error}", highlight=False, markup=False)
    if show_log:
        text = job_log(run)
        console.print(text if text is not None else "(the log is no longer on disk)",
                      highlight=False, markup=False)


@app.command("run")
def jobs_run(
    name: JobName,
    slot: Annotated[str, typer.Option(help="The slot (ISO-8601): a scheduler outside Skewless "
                                           "passes its own run time, so a rerun of it does "
                                           "not run the slot twice.")] = "now",
) -> None:
    """Run one slot of a job now, as the worker would: claimed once, retried, recorded. A
    slot that already ran is not run again: its recorded outcome is the answer. Exit 0 when
    the slot's run succeeded, else 1."""
    from skewless.jobs import job_named
    from skewless.worker import run_once

    _log_to_stderr()
    job = job_named(name)
    _check_redis()
    moment = parse_time(slot, "--slot")
    assert moment is not None
    run, ran = run_once(load_settings(), job, moment.replace(microsecond=0))
    if run is None:
        raise typer.Exit(1)  # not claimed and nothing recorded: the database said why
    console.print(f"run {run.id} of {name} at {run.slot.isoformat()}"
                  f"{'' if ran else ' (run before, by ' + run.worker + ')'}: {run.outcome}",
                  highlight=False)
    if run.outcome != "succeeded":
        raise typer.Exit(1)
