"""The model on the hot path: feature vectors in, LightGBM scores (and contributions) out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from skewless.artifact import ArtifactError, ModelArtifact


class Scorer:
    """A loaded model with its input encoding fixed from the contract at start-up.

    Numeric features become float64 (None → NaN); a categorical feature becomes the index of
    its value in the category list fixed at training, which is how LightGBM encoded the
    pandas categories it was trained on (unknown or missing → NaN).
    """

    def __init__(self, artifact: ModelArtifact) -> None:
        self.artifact = artifact
        self.booster = artifact.booster
        self.version = artifact.version
        contract = artifact.contract
        self.feature_names = [f["name"] for f in contract["features"]]
        categories: dict[str, list[str]] = contract.get("categories", {})
        self._codes: list[dict[str, float] | None] = [
            {c: float(i) for i, c in enumerate(categories[name])} if name in categories else None
            for name in self.feature_names
        ]
        stored = self.booster.pandas_categorical or []
        expected = [categories[n] for n in self.feature_names if n in categories]
        if stored != expected:
            raise ArtifactError(
                "the model's category lists differ from its contract's "
                f"(model {stored}, contract {expected})"
            )

    def matrix(self, rows: Sequence[Sequence[Any]]) -> np.ndarray:
        x = np.empty((len(rows), len(self.feature_names)), dtype=np.float64)
        codes = self._codes
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                mapping = codes[j]
                if value is None:
                    x[i, j] = math.nan
                elif mapping is None:
                    x[i, j] = value
                else:
                    x[i, j] = mapping.get(value, math.nan)
        return x

    def predict(self, x: np.ndarray) -> np.ndarray:
        # One thread: requests run concurrently, and one row gains nothing from more.
        return np.asarray(self.booster.predict(x, num_threads=1))

    def contributions(self, x: np.ndarray) -> list[dict[str, float]]:
        """Each feature's additive contribution to the raw score (log-odds), plus the bias."""
        raw = np.asarray(self.booster.predict(x, pred_contrib=True, num_threads=1))
        names = [*self.feature_names, "bias"]
        return [dict(zip(names, map(float, row), strict=True)) for row in raw]
