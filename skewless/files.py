"""JSON reports on disk: written whole (a reader never sees half of one), read when changed."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

Model = TypeVar("Model", bound=BaseModel)


def write_text_atomic(path: Path, text: str) -> Path:
    """Replace ``path`` with ``text`` in one rename: readers see the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        staging.write_text(text)
        os.replace(staging, path)
    except BaseException:  # an interrupted command (SIGINT) leaves no staged half behind
        staging.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path, doc: Any, indent: int = 1) -> Path:
    return write_text_atomic(path, json.dumps(doc, indent=indent, default=str) + "\n")


class JsonFiles:
    """JSON documents re-read only when their file changes (stat per call, parse per change);
    None while a file is absent or unreadable."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Path, type[BaseModel] | None], tuple[tuple[int, int], Any]] = {}
        self._lock = threading.Lock()

    def read(self, path: Path) -> Any:
        """The document as parsed JSON."""
        return self._load(path, None)

    def read_model(self, path: Path, model: type[Model]) -> Model | None:
        """The document as ``model`` (None also while it does not have the model's shape)."""
        return self._load(path, model)

    def _load(self, path: Path, model: type[BaseModel] | None) -> Any:
        try:
            stat = path.stat()
        except OSError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get((path, model))
        if cached and cached[0] == stamp:
            return cached[1]
        try:
            doc = json.loads(path.read_text())
            if model is not None:
                doc = model.model_validate(doc)
        except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
            return None
        with self._lock:
            self._cache[(path, model)] = (stamp, doc)
        return doc
