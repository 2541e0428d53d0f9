"""Running Feast's own CLI on the repo, exactly as a Feast user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from skewless.errors import SkewlessError
from skewless.settings import Settings, feast_process_env


class FeastCommandError(SkewlessError):
    """Feast's own CLI exited with an error."""


def run_feast(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``feast -c <repo> ARGS``; raises with Feast's output when it fails.

    The child sees ``SKEWLESS_REDIS`` from settings when set, else the process's own (set
    by :func:`skewless.redis.redis_for` while an embedded server runs).
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
