"""JSON documents with a type: the base of the model contract and the reports.

A document part holds the keys it was given: writing it back leaves out what was never set,
so a file read and written again is unchanged, and optional keys stay absent rather than
appearing as nulls.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class JsonDocument(BaseModel):
    """A typed part of a JSON document that writes back only the keys it was given."""

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, by_alias=True)
