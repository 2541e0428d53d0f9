"""Fixtures of the code tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No SKEWLESS_* variable set, and an empty working directory (no .env); returns it."""
    for key in list(os.environ):
        if key.startswith("SKEWLESS_"):
            monkeypatch.delenv(key)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd
