"""The fault suite's figures (losses, outage lengths) are printed after the run."""

from __future__ import annotations

import pytest

FIGURES: list[str] = []


@pytest.fixture
def figure():
    """``figure("...")`` records one measured line for the summary at the end of the run."""
    return FIGURES.append


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.section("fault figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
