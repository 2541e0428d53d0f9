"""What every command group shares: settings, time options, the console, the registry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from skewless.settings import Settings, get_settings

if TYPE_CHECKING:
    from skewless.registry import Registry

console = Console()
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def load_settings() -> Settings:
    """The settings, with Feast's environment exported and library noise silenced."""
    from skewless.feast_cli import quiet_library_warnings
    from skewless.settings import export_for_feast

    # Feast and ibis warn about their own internals on every call; users can do nothing
    # about them, so the CLI keeps its output to what the command did.
    quiet_library_warnings()
    settings = get_settings()
    export_for_feast(settings=settings)
    return settings


def parse_time(value: str | None, name: str) -> datetime | None:
    """An ISO-8601 option value (``now`` for the current time; UTC when it has no zone)."""
    if value is None:
        return None
    if value == "now":
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO-8601 time", param_hint=name) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def open_registry(settings: Settings | None = None) -> Registry:
    """The model registry; use it in a ``with`` block so its connections are closed."""
    from skewless.registry import Registry

    return Registry.from_settings(settings or load_settings())
