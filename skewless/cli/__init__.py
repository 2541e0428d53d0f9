"""The ``skewless`` command: one module per command group, gathered here.

Each command imports its work inside its body, so ``skewless --help`` stays fast and no
import cycle forms between training/ and service/. A group's module holds a ``typer.Typer``
named ``app``: named for a group (``skewless models ...``), unnamed for top-level commands.
"""

from __future__ import annotations

from importlib import import_module

import typer

from skewless.cli.common import console

# The command groups, in the order `skewless --help` lists them: a new group is a module
# here and its name in this line.
GROUPS = ("setup", "doctor", "pipeline", "quality", "serving", "embedded", "db", "models", "runs",
          "backtest", "rollout", "logs", "catalog", "tokens", "jobs")

app = typer.Typer(help="Skewless: one feature definition for training and serving.",
                  no_args_is_help=True, add_completion=False)
for group in GROUPS:
    module = import_module(f"skewless.cli.{group}")
    app.add_typer(module.app)
    if hasattr(module, "worker_app"):  # a group's top-level command (`skewless worker`)
        app.add_typer(module.worker_app)


def main() -> None:
    """Entry point: known failures print one clear line and exit 1, not a traceback."""
    from pydantic import ValidationError
    from rich.markup import escape

    from skewless.errors import SkewlessError

    try:
        app()
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        for error in exc.errors():  # one line per variable, not a traceback
            name = "SKEWLESS_" + str(error["loc"][0]).upper() if error["loc"] else "settings"
            console.print(f"[red]configuration error:[/] {escape(name)}: {escape(error['msg'])}",
                          soft_wrap=True, highlight=False)
        raise SystemExit(1) from None
    except SkewlessError as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)  # one line, however long
        raise SystemExit(1) from None
    except Exception as exc:
        if type(exc).__module__.startswith("feast."):  # e.g. a feature service not applied
            console.print(f"[red]Feast error:[/] {exc}\n(has `skewless apply` run on this repo?)",
                          soft_wrap=True)
            raise SystemExit(1) from None
        raise
