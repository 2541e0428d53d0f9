"""`skewless rollout`: the challenger against production on the same events, and the rollout
policy that promotes or aborts it."""

from __future__ import annotations

from typing import Annotated

import typer

from skewless.cli.common import Json, console, load_settings, open_registry, parse_time

app = typer.Typer(name="rollout", no_args_is_help=True,
                  help="The rollout of a challenger: its evidence and the policy's decision.")

Name = Annotated[str | None, typer.Option(
    "--name", help="The model name (default: the feature service's).")]
Now = Annotated[str, typer.Option(help="Labels known at this time (ISO-8601).")]


def _run(command: str, name: str | None, as_json: bool, now: str) -> None:
    import json

    from skewless.reports.rollout import print_rollout
    from training import rollout

    settings = load_settings()
    with open_registry(settings) as registry:
        act = rollout.apply if command == "apply" else rollout.status
        report = act(settings, registry, name, now=parse_time(now, "--now"))
    path = rollout.write_report(settings, report)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, default=str))
        return
    print_rollout(report, console)
    console.print(f"report: {path}", highlight=False)


@app.command("status")
def rollout_status(name: Name = None, as_json: Json = False, now: Now = "now") -> None:
    """The challenger against production on the events both scored since its rollout
    started (errors, latency, score shift, agreement, and the paired ROC AUC and cost
    differences once labels arrive), and what the policy would decide; changes nothing."""
    _run("status", name, as_json, now)


@app.command("apply")
def rollout_apply(name: Name = None, as_json: Json = False, now: Now = "now") -> None:
    """Run the rollout policy once: abort the challenger (back to candidate, audited with the
    evidence) when it breaks a limit, promote it through the acceptance gate when its paired
    ROC AUC interval clears the margin on enough labels (a gate refusal holds it, audited),
    or wait."""
    _run("apply", name, as_json, now)
