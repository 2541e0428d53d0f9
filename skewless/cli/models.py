"""`skewless models`: the model registry's versions, stages and audit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skewless.cli.common import Json, console, load_settings, open_registry

app = typer.Typer(name="models", help="The model registry: versions, stages and their audit.",
                  no_args_is_help=True)


@app.command("list")
def models_list(
    name: Annotated[str | None, typer.Argument(help="Only this model name.")] = None,
    as_json: Json = False,
) -> None:
    """Every registered version, its stage and holdout metric."""
    import json

    from rich.table import Table

    with open_registry() as registry:
        rows = [row.summary() for row in registry.versions(name)]
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


@app.command("show")
def models_show(name: str, version: str, as_json: Json = False) -> None:
    """One version in full: contract, metrics, training window and stage history."""
    import json

    with open_registry() as registry:
        details = registry.get(name, version).details()
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


@app.command("register")
def models_register(directory: Annotated[Path, typer.Argument(
        help="A model artefact directory (model.txt + contract.json).")]) -> None:
    """Register an artefact trained elsewhere as a candidate."""
    with open_registry() as registry:
        row = registry.register(directory)
    console.print(f"registered {row.name} {row.version} as a candidate")


@app.command("check")
def models_check(
    name: str,
    version: Annotated[str | None, typer.Argument(
        help="One version (default: every version of NAME with no recorded check).")] = None,
    as_json: Json = False,
) -> None:
    """Check artefacts in a separate process (read, sha256, parse, one prediction) and record
    it, so the predictor may load them; exit 1 when one is refused."""
    import json

    from skewless.registry import ArtifactRefused, current_user

    outcomes: dict[str, dict[str, object]] = {}
    with open_registry() as registry:
        versions = [version] if version else [
            r.version for r in registry.versions(name) if r.artifact_checked_at is None]
        for v in versions:
            try:
                row = registry.check(name, v, current_user())
                outcomes[v] = {"checked": True, "at": str(row.artifact_checked_at)}
            except ArtifactRefused as exc:
                outcomes[v] = {"checked": False, "error": str(exc)}
    if as_json:
        typer.echo(json.dumps(outcomes, indent=2))
    elif not outcomes:
        console.print(f"every version of {name} has a recorded artefact check")
    else:
        for v, outcome in outcomes.items():
            console.print(f"[green]{name} {v}: checked[/]" if outcome["checked"]
                          else f"[red]{name} {v}: refused:[/] {outcome['error']}",
                          soft_wrap=True)
    if not all(o["checked"] for o in outcomes.values()):
        raise typer.Exit(1)


@app.command("promote")
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
    from skewless.reports.gate import print_criteria
    from training.evaluation.gate import promote

    settings = load_settings()
    try:
        with open_registry(settings) as registry:
            row, decision = promote(settings, registry, name, version, current_user(), reason,
                                    force)
    except PromotionRefused as exc:
        if as_json:
            typer.echo(json.dumps({"promoted": False, "error": str(exc), **(
                exc.decision.evidence() if exc.decision else {})}, indent=2, default=str))
        else:
            if exc.decision:
                print_criteria(exc.decision, console)
            console.print(f"[red]refused:[/] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps({"promoted": True, "version": row.version, **(
            decision.evidence() if decision else {"gate": "skipped (forced)"})},
            indent=2, default=str))
    else:
        how = decision.explain() if decision else f"forced: {reason}"
        if decision:
            print_criteria(decision, console)
        console.print(f"[green]{name} {version} is production[/] — {how}", soft_wrap=True)


@app.command("rollback")
def models_rollback(
    name: str,
    reason: Annotated[str, typer.Option(help="Why; stored in the audit.")] = "rollback",
    as_json: Json = False,
) -> None:
    """Return production to the version that was production before the current one."""
    import json

    from skewless.registry import current_user

    with open_registry() as registry:
        row = registry.rollback(name, current_user(), reason)
    if as_json:
        typer.echo(json.dumps({"production": row.version}))
    else:
        console.print(f"[green]{name} {row.version} is production again[/]")


@app.command("archive")
def models_archive(
    name: str, version: str,
    reason: Annotated[str, typer.Option(help="Why; stored in the audit.")] = "archived",
    as_json: Json = False,
) -> None:
    """Archive a candidate (production is replaced by promote or rollback, never emptied)."""
    import json

    from skewless.registry import current_user

    with open_registry() as registry:
        row = registry.archive(name, version, current_user(), reason)
    if as_json:
        typer.echo(json.dumps({"archived": row.version}))
    else:
        console.print(f"{name} {row.version} archived")


# Rollout: a challenger beside production --------------------------------------------------

Reason = Annotated[str, typer.Option(help="Why; stored in the audit.")]


@app.command("shadow")
def models_shadow(name: str, version: str, reason: Reason = "shadow",
                  as_json: Json = False) -> None:
    """Make VERSION the shadow of NAME: scored beside production, its scores never returned."""
    import json

    from skewless.registry import current_user

    with open_registry() as registry:
        row = registry.shadow(name, version, current_user(), reason)
    if as_json:
        typer.echo(json.dumps({"shadow": row.version}))
    else:
        console.print(f"{name} {row.version} is the shadow")


@app.command("canary")
def models_canary(
    name: str, version: str,
    percent: Annotated[float, typer.Option(
        help="Share of requests it answers, in per cent: above 0, at most 50.")],
    reason: Reason = "canary",
    as_json: Json = False,
) -> None:
    """Make VERSION the canary of NAME (from candidate or shadow), or change its share."""
    import json

    from skewless.registry import current_user

    with open_registry() as registry:
        row = registry.canary(name, version, percent, current_user(), reason)
    if as_json:
        typer.echo(json.dumps({"canary": row.version, "traffic_percent": row.traffic_percent}))
    else:
        console.print(f"{name} {row.version} is the canary at {row.traffic_percent:g}% of "
                      "requests")


@app.command("rollout")
def models_rollout(name: str, as_json: Json = False) -> None:
    """Where the rollout of NAME stands: production, its challenger, since when, by whom."""
    import json

    with open_registry() as registry:
        status = registry.rollout(name).to_json()
    if as_json:
        typer.echo(json.dumps(status, indent=2))
        return
    production = f"production {status['production'] or 'none'}"
    if status["challenger"] is None:
        console.print(f"{name}: {production}; no challenger")
        return
    share = (f" at {status['traffic_percent']:g}% of requests"
             if status["traffic_percent"] is not None else " (scored, never answering)")
    console.print(f"{name}: {production}; challenger {status['challenger']} {status['stage']}"
                  f"{share}", soft_wrap=True)
    console.print(f"  since {status['since'][:19]} by {status['by']}: {status['reason']}; "
                  f"rollout started {status['started_at'][:19]} by {status['started_by']}",
                  soft_wrap=True)


@app.command("end-rollout")
def models_end_rollout(name: str, reason: Reason = "rollout ended",
                       as_json: Json = False) -> None:
    """Send the challenger of NAME back to candidate (archive it afterwards if it is done)."""
    import json

    from skewless.registry import current_user

    with open_registry() as registry:
        row = registry.end_rollout(name, current_user(), reason)
    if as_json:
        typer.echo(json.dumps({"ended": row.version, "stage": row.stage}))
    else:
        console.print(f"{name} {row.version} is a candidate again")
