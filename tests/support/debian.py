"""Debian tools the tests drive (chromium, prometheus): installed when missing and we are root."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def ensure_commands(packages: dict[str, str]) -> dict[str, str]:
    """Paths of the commands (keys), installing their Debian packages (values) if needed."""
    missing = sorted({p for c, p in packages.items() if shutil.which(c) is None})
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", *missing]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
            subprocess.run(install, env=env, check=True, capture_output=True)
    found = {c: shutil.which(c) for c in packages}
    absent = [c for c, path in found.items() if path is None]
    if absent:
        pytest.fail(f"these tests need {', '.join(absent)}: apt-get install "
                    + " ".join(sorted({packages[c] for c in absent})))
    return {c: str(path) for c, path in found.items()}
