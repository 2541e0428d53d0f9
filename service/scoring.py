"""The model on the hot path: feature vectors in, LightGBM scores (and contributions) out."""

from __future__ import annotations

import ctypes
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from lightgbm.basic import _LIB, _safe_call

from skewless.artifact import ArtifactError, ModelArtifact


class Scorer:
    """A loaded model with its input encoding and decision threshold fixed from the contract
    at start-up.

    Numeric features become float64 (None → NaN); a categorical feature becomes the index of
    its value in the category list fixed at training, which is how LightGBM encoded the
    pandas categories it was trained on (unknown or missing → NaN).
    """

    def __init__(self, artifact: ModelArtifact, fallback_threshold: float = 0.5) -> None:
        self.artifact = artifact
        self.booster = artifact.booster
        self.version = artifact.version
        contract = artifact.contract
        # The model's own cost-minimising threshold comes with it (a swap changes both);
        # without one, the configured SKEWLESS_DECISION_THRESHOLD.
        self.threshold = (contract.decision.threshold if contract.decision is not None
                          else fallback_threshold)
        self.feature_names = contract.feature_names
        categories = contract.categories
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

        self._fast = _SingleRowPredictor(self.booster, len(self.feature_names))
        self._check_fast_path()

    def _check_fast_path(self) -> None:
        """The single-row path must give exactly what Booster.predict gives."""
        rng = np.random.default_rng(0)
        x = rng.normal(0, 100, size=(64, len(self.feature_names)))
        x[rng.random(x.shape) < 0.2] = math.nan
        for j, mapping in enumerate(self._codes):
            if mapping is not None:
                x[:, j] = rng.integers(0, max(len(mapping), 1), size=len(x))
        reference = self.predict(x)
        fast = np.array([self.predict_one(row) for row in x])
        if not np.array_equal(fast, reference, equal_nan=True):
            raise ArtifactError("LightGBM's single-row prediction differs from Booster.predict")

    def close(self) -> None:
        self._fast.close()

    def encodes_like(self, other: Scorer) -> bool:
        """Whether ``other`` turns a vector into the same matrix row (same features, same
        category codes), so one encoded row serves both."""
        return self.feature_names == other.feature_names and self._codes == other._codes

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

    def predict_one(self, row: np.ndarray) -> float:
        return self._fast.predict(row)

    def contributions(self, x: np.ndarray) -> list[dict[str, float]]:
        """Each feature's additive contribution to the raw score (log-odds), plus the bias."""
        raw = np.asarray(self.booster.predict(x, pred_contrib=True, num_threads=1))
        names = [*self.feature_names, "bias"]
        return [dict(zip(names, map(float, row), strict=True)) for row in raw]


class _SingleRowPredictor:
    """LightGBM's C API for one-row latency (LGBM_BoosterPredictForMatSingleRowFast).

    Booster.predict validates and converts its input on every call; for one row that costs
    several times the trees themselves. The fast config is prepared once per model.
    """

    PREDICT_NORMAL = 0  # C_API_PREDICT_NORMAL: transformed score (probability)
    FLOAT64 = 1  # C_API_DTYPE_FLOAT64

    def __init__(self, booster: Any, n_features: int) -> None:
        self._booster = booster  # keeps the handle alive
        self._handle = ctypes.c_void_p()
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(self.PREDICT_NORMAL), ctypes.c_int(0),
            ctypes.c_int(-1), ctypes.c_int(self.FLOAT64), ctypes.c_int32(n_features),
            ctypes.c_char_p(b"num_threads=1"), ctypes.byref(self._handle)))
        self._out = np.zeros(1, dtype=np.float64)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._out_len = ctypes.c_int64()

    def predict(self, row: np.ndarray) -> float:
        row = np.ascontiguousarray(row, dtype=np.float64)
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFast(
            self._handle, row.ctypes.data_as(ctypes.c_void_p), ctypes.byref(self._out_len),
            self._out_ptr))
        return float(self._out[0])

    def close(self) -> None:
        if self._handle:
            _safe_call(_LIB.LGBM_FastConfigFree(self._handle))
            self._handle = ctypes.c_void_p()
