"""Small real model artefacts: a LightGBM model of two features, trained in milliseconds."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

FEATURES = [{"name": "v__a", "view": "v", "feature": "a", "dtype": "Float64"},
            {"name": "v__b", "view": "v", "feature": "b", "dtype": "Float64"}]


@functools.cache
def model_text(rounds: int = 3) -> str:
    """LightGBM's text of a small binary model over ``v__a`` and ``v__b``."""
    rng = np.random.default_rng(rounds)
    x = rng.normal(size=(400, 2))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 4, "seed": 1},
                        lgb.Dataset(x, y, feature_name=[f["name"] for f in FEATURES]), rounds)
    return str(booster.model_to_string())


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_artifact(directory: Path, version: str, text: str | None = None,
                   fingerprint: str = "sha256:" + "f" * 64, name: str = "fraud",
                   **model: Any) -> Path:
    """An artefact directory holding ``text`` (default: the small model) as model.txt and a
    contract naming its sha256; ``model`` overrides entries of the contract's ``model``."""
    text = model_text() if text is None else text
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.txt").write_text(text)
    (directory / "contract.json").write_text(json.dumps({
        "feature_service": name, "fingerprint": fingerprint, "features": FEATURES,
        "model": {"version": version, "file": "model.txt", "sha256": sha256_text(text),
                  **model},
        "metrics": {"holdout": {"roc_auc": 0.9}}, "training": {"windows": {}},
    }))
    return directory
