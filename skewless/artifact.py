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

import lightgbm as lgb
from pydantic import ValidationError

from skewless.contract import ModelContract, ModelInfo
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
    contract: ModelContract

    @property
    def version(self) -> str:
        return self.contract.version


def contract_text(contract: ModelContract) -> str:
    """``contract.json`` as written beside a model."""
    return json.dumps(contract.to_json(), indent=2, default=str) + "\n"


def save_artifact(
    booster: lgb.Booster, contract: ModelContract, model_dir: Path, version: str | None = None
) -> Path:
    """Write model.txt and contract.json (with the model's sha256) into a new version dir."""
    base = model_dir / contract.feature_service
    version = version or new_version(base)
    directory = base / version
    directory.mkdir(parents=True, exist_ok=False)
    model_path = directory / MODEL_FILE
    booster.save_model(str(model_path), num_iteration=booster.best_iteration or None)
    contract.model = ModelInfo(version=version, format="lightgbm-text", file=MODEL_FILE,
                               sha256=sha256_file(model_path))
    (directory / CONTRACT_FILE).write_text(contract_text(contract))
    return directory


def parse_contract(text: str, where: Path) -> ModelContract:
    """A contract from its JSON text; ArtifactError naming ``where`` when it is not one."""
    try:
        return ModelContract.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise ArtifactError(f"{where} is not a model contract: {problems}") from exc


def load_artifact(directory: Path) -> ModelArtifact:
    """Load and verify a model artefact; raises ArtifactError naming what is wrong."""
    contract_path = directory / CONTRACT_FILE
    if not contract_path.is_file():
        raise ArtifactError(f"no {CONTRACT_FILE} in {directory}")
    text = contract_path.read_text()
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{contract_path} is not valid JSON: {exc}") from exc
    contract = parse_contract(text, contract_path)
    if contract.model is None:
        raise ArtifactError(f"{contract_path} names no model file (no \"model\" entry)")
    model_path = directory / contract.model.file
    if not model_path.is_file():
        raise ArtifactError(f"model file {model_path} is missing")
    actual = sha256_file(model_path)
    if actual != contract.model.sha256:
        raise ArtifactError(
            f"{model_path} sha256 {actual} does not match the contract's {contract.model.sha256}"
        )
    try:
        booster = lgb.Booster(model_file=str(model_path))
    except lgb.basic.LightGBMError as exc:
        raise ArtifactError(f"{model_path} is not a LightGBM text model: {exc}") from exc
    if booster.feature_name() != contract.feature_names:
        raise ArtifactError("the model's feature names differ from its contract's")
    return ModelArtifact(directory=directory, booster=booster, contract=contract)


def read_contract(directory: Path) -> ModelContract | None:
    """An artefact directory's contract, or None when the directory holds none."""
    path = directory / CONTRACT_FILE
    if not path.is_file():
        return None
    return parse_contract(path.read_text(), path)


def latest_artifact_dir(model_dir: Path, feature_service: str) -> Path:
    base = model_dir / feature_service
    versions = sorted(p for p in base.glob("*") if (p / CONTRACT_FILE).is_file())
    if not versions:
        raise ArtifactError(f"no trained model for {feature_service} under {base}")
    return versions[-1]
