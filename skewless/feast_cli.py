"""Feast on the repo: its own CLI, exactly as a Feast user runs it, and its SDK store."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from skewless.errors import SkewlessError
from skewless.settings import Settings, export_for_feast, feast_process_env


def quiet_library_warnings() -> None:
    """Silence the warnings Feast, ibis and dask raise about their own internals.

    Users can do nothing about them. Feast puts ``simplefilter("once", ...)`` in front of
    every filter when it is imported, so this runs again after the import.
    """
    for category in (DeprecationWarning, FutureWarning, RuntimeWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(feast|ibis|dask)(\.|$)")


def open_store(settings: Settings) -> Any:  # feast.FeatureStore; imported here (slow import)
    from feast import FeatureStore

    quiet_library_warnings()
    export_for_feast()
    return FeatureStore(repo_path=str(settings.repo_path))


class FeastCommandError(SkewlessError):
    """Feast's own CLI exited with an error."""


def run_feast(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``feast -c <repo> ARGS``; raises with Feast's output when it fails.

    The child sees ``SKEWLESS_REDIS`` from settings when set, else the process's own (set
    by :func:`skewless.embedded_redis.redis_for` while an embedded server runs).
    """
    feast = Path(sys.executable).with_name("feast")
    cmd = [str(feast) if feast.exists() else "feast", "-c", str(settings.repo_path), *args]
    result = subprocess.run(cmd, capture_output=True, text=True,
                            env=feast_process_env(settings.redis))
    if result.returncode != 0:
        raise FeastCommandError(
            f"`feast {' '.join(args)}` failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        )
    return result
