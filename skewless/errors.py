"""The errors Skewless raises on purpose, each with the HTTP status it maps to.

The CLI prints them as one line instead of a traceback; the service answers them with their
``status_code`` and ``detail`` (as Feast's errors carry theirs), so no route maps errors case by
case. An error without a status is not meant for clients: the service logs it and answers a
generic 500.
"""

from __future__ import annotations

from typing import Any


class SkewlessError(RuntimeError):
    """A failure whose message says what is wrong and what to look at."""

    status_code: int | None = None

    def detail(self) -> Any:
        """What an HTTP client is told (the ``detail`` of the JSON body)."""
        return str(self)

    def headers(self) -> dict[str, str]:
        """Headers of the answer (``Retry-After`` for an error that passes)."""
        return {}


class InvalidInput(SkewlessError):
    """What the user gave cannot be used as it is; the message says what to change."""

    status_code = 400


class Unavailable(SkewlessError):
    """A dependency is missing or down; answered with 503 and its name."""

    status_code = 503
