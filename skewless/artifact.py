"""Model artefacts: LightGBM's text format, a sha256, and the JSON contract beside it.

Layout: ``<model_dir>/<feature_service>/<version>/model.txt`` and ``contract.json``. Nothing
is pickled; loading verifies the checksum before LightGBM parses a byte.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb

from skewless.errors import SkewlessError

MODEL_FILE = "model.txt"
CONTRACT_FILE = "contract.json"



class ArtifactError(SkewlessError):
    """A model artefact is missing, corrupt or inconsistent."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def new_version(base: Path) -> str:
    """A sortable, unique version name (UTC time of training)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    version, n = stamp, 1
    while (base / version).exists():
        n += 1
        version = f"{stamp}-{n}"
    return version


@dataclass
class ModelArtifact:
    directory: Path
    booster: lgb.Booster
    contract: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.contract["model"]["version"])


def save_artifact(
    booster: lgb.Booster, contract: dict[str, Any], model_dir: Path, version: str | None = None
) -> Path:
    """Write model.txt and contract.json (with the model's sha256) into a new version dir."""
    base = model_dir / contract["feature_service"]
    version = version or new_version(base)
    directory = base / version
    directory.mkdir(parents=True, exist_ok=False)
    model_path = directory / MODEL_FILE
    booster.save_model(str(model_path), num_iteration=booster.best_iteration or None)
    contract["model"] = {
        **contract.get("model", {}),
        "version": version,
        "format": "lightgbm-text",
        "file": MODEL_FILE,
        "sha256": sha256_file(model_path),
    }
    (directory / CONTRACT_FILE).write_text(json.dumps(contract, indent=2, default=str) + "\n")
    return directory


def load_artifact(directory: Path) -> ModelArtifact:
    """Load and verify a model artefact; raises ArtifactError naming what is wrong."""
    contract_path = directory / CONTRACT_FILE
    if not contract_path.is_file():
        raise ArtifactError(f"no {CONTRACT_FILE} in {directory}")
    try:
        contract = json.loads(contract_path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{contract_path} is not valid JSON: {exc}") from exc
    model_info = contract.get("model", {})
    model_path = directory / model_info.get("file", MODEL_FILE)
    if not model_path.is_file():
        raise ArtifactError(f"model file {model_path} is missing")
    actual = sha256_file(model_path)
    if actual != model_info.get("sha256"):
        raise ArtifactError(
            f"{model_path} sha256 {actual} does not match the contract's {model_info.get('sha256')}"
        )
    try:
        booster = lgb.Booster(model_file=str(model_path))
    except lgb.basic.LightGBMError as exc:
        raise ArtifactError(f"{model_path} is not a LightGBM text model: {exc}") from exc
    names = [f["name"] for f in contract.get("features", [])]
    if booster.feature_name() != names:
        raise ArtifactError("the model's feature names differ from its contract's")
    return ModelArtifact(directory=directory, booster=booster, contract=contract)


def read_contract(directory: Path) -> dict[str, Any] | None:
    """An artefact directory's contract, or None when the directory holds none."""
    path = directory / CONTRACT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def latest_artifact_dir(model_dir: Path, feature_service: str) -> Path:
    base = model_dir / feature_service
    versions = sorted(p for p in base.glob("*") if (p / CONTRACT_FILE).is_file())
    if not versions:
        raise ArtifactError(f"no trained model for {feature_service} under {base}")
    return versions[-1]
