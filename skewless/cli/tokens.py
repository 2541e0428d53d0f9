"""`skewless tokens`: named, scoped API tokens for the admin API, the catalog and /predict."""

from __future__ import annotations

from typing import Annotated

import typer

from skewless.cli.common import Json, console, load_settings

app = typer.Typer(name="tokens", no_args_is_help=True,
                  help="Named API tokens: create (shown once), list, revoke.")


@app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="Who or what holds it (a person, a system).")],
    role: Annotated[str, typer.Option(
        help="viewer (catalog, read-only admin), operator (+ reload, shadow, canary), "
        "approver (+ promote, rollback, archive, force) or client (/predict only).")],
    days: Annotated[int, typer.Option(help="Days until it expires.")] = 90,
    as_json: Json = False,
) -> None:
    """Create a token; its secret is printed once and stored only as its SHA-256."""
    import json

    from skewless.registry import current_user
    from skewless.tokens import TokenStore

    with TokenStore.from_settings(load_settings()) as store:
        row, secret = store.create(name, role, days, current_user())
    if as_json:
        typer.echo(json.dumps({**row.to_json(), "token": secret}, indent=2))
        return
    console.print(f"[green]token {row.name}[/] ({row.role}, expires "
                  f"{row.expires_at:%Y-%m-%d %H:%M} UTC):\n{secret}\n"
                  "[dim]shown once: only its hash is stored. Send it as "
                  "Authorization: Bearer <token>.[/]", soft_wrap=True, highlight=False)


@app.command("list")
def tokens_list(as_json: Json = False) -> None:
    """Every token: name, role, state (active, expired, revoked), expiry; never a secret."""
    import json

    from rich.table import Table

    from skewless.tokens import TokenStore

    with TokenStore.from_settings(load_settings()) as store:
        rows = store.tokens()
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    table = Table(title="API tokens")
    for column in ("name", "role", "state", "prefix", "expires", "created by"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.name, row.role, row.state(), row.prefix + "…",
                      f"{row.expires_at:%Y-%m-%d %H:%M}", row.created_by)
    console.print(table)


@app.command("revoke")
def tokens_revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
) -> None:
    """Revoke a token (running services refuse it within SKEWLESS_TOKEN_REFRESH_SECONDS)."""
    from skewless.registry import current_user
    from skewless.tokens import TokenStore

    with TokenStore.from_settings(load_settings()) as store:
        row = store.revoke(name, current_user())
    console.print(f"[green]revoked[/] token {row.name} ({row.role}) at "
                  f"{row.revoked_at:%Y-%m-%d %H:%M:%S} UTC", highlight=False)
