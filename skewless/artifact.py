"""Model artefacts: LightGBM's text format, a sha256, and the JSON contract beside it.

Layout: ``<model_dir>/<feature_service>/<version>/model.txt`` and ``contract.json``. Nothing
is pickled. Loading reads the model file once, through one open descriptor and at most
``SKEWLESS_MODEL_MAX_BYTES`` of it, checks the sha256 of those bytes, and hands LightGBM the
same bytes (:func:`read_model_text`): a file swapped on disk after its check is never the one
parsed. Before any serving process parses a new artefact, a child process has parsed it
(``skewless.artifact_check``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import lightgbm as lgb
from pydantic import ValidationError

from skewless.artifact_check import REFUSED, RESULT
from skewless.contract import ModelContract, ModelInfo
from skewless.errors import SkewlessError
from skewless.settings import Settings

MODEL_FILE = "model.txt"
CONTRACT_FILE = "contract.json"


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class ArtifactLimits:
    """What reading and checking a model artefact may cost; the defaults are the settings'."""

    max_bytes: int = _default("model_max_bytes")
    check_timeout_seconds: float = _default("model_check_timeout_seconds")
    check_memory_bytes: int = _default("model_check_memory_bytes")

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactLimits:
        return cls(max_bytes=settings.model_max_bytes,
                   check_timeout_seconds=settings.model_check_timeout_seconds,
                   check_memory_bytes=settings.model_check_memory_bytes)


class ArtifactError(SkewlessError):
    """A model artefact is missing, corrupt or inconsistent."""


class ArtifactCheckFailed(ArtifactError):
    """The check process refused the artefact, crashed on it or ran out of time."""


def read_capped(path: Path, max_bytes: int, what: str = "model file") -> bytes:
    """A regular file's bytes, read once through one descriptor; refused beyond ``max_bytes``.

    Anything but a regular file (a FIFO that would block, a device) is refused, and so is a
    file over the limit, by its size before a byte is read and again by what was read (a
    file growing meanwhile).
    """
    limit = f"the limit of {max_bytes:,} bytes (SKEWLESS_MODEL_MAX_BYTES)"
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (regular files ignore it).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{what} {path} is missing") from exc
    except OSError as exc:
        raise ArtifactError(f"{what} {path} cannot be opened: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactError(f"{what} {path} is not a regular file")
        if info.st_size > max_bytes:
            raise ArtifactError(f"{what} {path} holds {info.st_size:,} bytes, over {limit}")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ArtifactError(f"{what} {path} grew past {limit}")
    return data


def read_model_text(path: Path, sha256: str, max_bytes: int,
                    expected_from: str = "the contract's") -> str:
    """The model file's text, from the very bytes whose sha256 was checked.

    The only way Skewless reads a model file for parsing: one read (:func:`read_capped`), the
    digest of those bytes compared with ``sha256``, and those bytes decoded and returned, so
    what LightGBM parses is exactly what was hashed.
    """
    data = read_capped(path, max_bytes)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ArtifactError(
            f"{path} sha256 {actual} does not match {expected_from} {sha256}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path} is not UTF-8 text, so not a LightGBM text model") from exc


def parse_booster(text: str, where: Path) -> lgb.Booster:
    """LightGBM's booster from a model text already read and checked."""
    try:
        return lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:
        raise ArtifactError(f"{where} is not a LightGBM text model: {exc}") from exc


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


def load_contract(directory: Path, max_bytes: int | None = None) -> ModelContract:
    """An artefact directory's contract, naming a model file; ArtifactError when it is not."""
    contract_path = directory / CONTRACT_FILE
    if not contract_path.is_file():
        raise ArtifactError(f"no {CONTRACT_FILE} in {directory}")
    raw = read_capped(contract_path, max_bytes or ArtifactLimits().max_bytes, "contract")
    try:
        text = raw.decode("utf-8")
        json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{contract_path} is not valid JSON: {exc}") from exc
    contract = parse_contract(text, contract_path)
    if contract.model is None:
        raise ArtifactError(f"{contract_path} names no model file (no \"model\" entry)")
    return contract


def load_artifact(directory: Path, max_bytes: int | None = None,
                  sha256: str | None = None) -> ModelArtifact:
    """Load and verify a model artefact; raises ArtifactError naming what is wrong.

    ``sha256``: the digest the model file must have whatever its contract says now (the one
    registered, or the one a check process verified), so a directory rewritten after its
    check, contract and all, is refused.
    """
    limit = max_bytes or ArtifactLimits().max_bytes
    contract = load_contract(directory, limit)
    assert contract.model is not None
    expected_from = "the contract's"
    if sha256 is not None:
        if contract.model.sha256 != sha256:
            raise ArtifactError(
                f"{directory / CONTRACT_FILE} gives the model sha256 {contract.model.sha256}, "
                f"not the {sha256} it was checked and registered with")
        expected_from = "the checked and registered"
    model_path = directory / contract.model.file
    text = read_model_text(model_path, contract.model.sha256, limit, expected_from)
    booster = parse_booster(text, model_path)
    if booster.feature_name() != contract.feature_names:
        raise ArtifactError("the model's feature names differ from its contract's")
    return ModelArtifact(directory=directory, booster=booster, contract=contract)


def read_contract(directory: Path) -> ModelContract | None:
    """An artefact directory's contract, or None when the directory holds none."""
    path = directory / CONTRACT_FILE
    if not path.is_file():
        return None
    return parse_contract(read_capped(path, ArtifactLimits().max_bytes, "contract").decode(
        "utf-8", errors="replace"), path)


def latest_artifact_dir(model_dir: Path, feature_service: str) -> Path:
    base = model_dir / feature_service
    versions = sorted(p for p in base.glob("*") if (p / CONTRACT_FILE).is_file())
    if not versions:
        raise ArtifactError(f"no trained model for {feature_service} under {base}")
    return versions[-1]


# The check process ------------------------------------------------------------------------

CHECK_OUTPUT_TAIL = 4096  # bytes kept of each of the check process's streams, for a reason


def check_command(directory: Path, sha256: str, limits: ArtifactLimits,
                  version: str | None = None) -> list[str]:
    """The command line of the check process (``skewless.artifact_check``)."""
    command = [sys.executable, "-m", "skewless.artifact_check", str(directory),
               "--sha256", sha256, "--max-bytes", str(limits.max_bytes),
               "--memory-bytes", str(limits.check_memory_bytes)]
    return command + (["--version", version] if version else [])


def check_artifact(directory: Path, sha256: str, limits: ArtifactLimits,
                   version: str | None = None,
                   command: Sequence[str] | None = None) -> dict[str, Any]:
    """Have a child process read, hash, parse and score the artefact in ``directory``.

    ``sha256`` is the digest the model file must have (the one to be registered, or the one
    registered); ``version``, when given, the version its contract must name. Returns what
    the check found (JSON, kept as evidence); raises :class:`ArtifactCheckFailed` with the
    reason when the child refused the artefact, crashed, or outlived
    ``limits.check_timeout_seconds``. ``command`` replaces the child's command line (tests).
    """
    argv = list(command) if command else check_command(directory, sha256, limits, version)
    started = time.perf_counter()
    # Files, not pipes: the child's output (LightGBM may warn once per tree) is never held
    # whole in memory, only its tail is read back.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                  timeout=limits.check_timeout_seconds, check=False)
        except subprocess.TimeoutExpired as exc:  # run() has killed the child
            raise ArtifactCheckFailed(
                f"the check of {directory} did not finish within "
                f"{limits.check_timeout_seconds:g} s (SKEWLESS_MODEL_CHECK_TIMEOUT_SECONDS); "
                "refused") from exc
        seconds = time.perf_counter() - started
        stdout, stderr = _tail(out), _tail(err)
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        said = _lightgbm_said(stdout + "\n" + stderr)
        raise ArtifactCheckFailed(
            f"LightGBM crashed on the model in {directory}: the check process was killed by "
            f"{name}" + (f" after {said!r}" if said else "") + "; refused")
    if done.returncode != 0:
        raise ArtifactCheckFailed(f"{_reason(stderr, stdout)}; refused")
    found = [line for line in stdout.splitlines() if line.startswith(RESULT)]
    if not found:
        raise ArtifactCheckFailed(f"the check of {directory} ended without a result; refused")
    result: dict[str, Any] = json.loads(found[-1].removeprefix(RESULT))
    result["seconds"] = round(seconds, 3)
    return result


def _tail(fh: IO[bytes]) -> str:
    fh.seek(0, os.SEEK_END)
    fh.seek(max(fh.tell() - CHECK_OUTPUT_TAIL, 0))
    return fh.read().decode("utf-8", errors="replace")


def _lightgbm_said(output: str) -> str:
    """LightGBM's first fatal message, else its last line of any kind."""
    lines = [line.strip() for line in output.splitlines() if line.startswith("[LightGBM]")]
    fatal = [line for line in lines if "[Fatal]" in line]
    return fatal[0] if fatal else lines[-1] if lines else ""


def _reason(stderr: str, stdout: str) -> str:
    refused = [line for line in stderr.splitlines() if line.startswith(REFUSED)]
    if refused:
        return refused[-1].removeprefix(REFUSED)
    last = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = _lightgbm_said(stdout + "\n" + stderr)
    return ("the check process failed: " + (last[-1] if last else "no message")
            + (f" (LightGBM: {said})" if said and said not in last[-1:] else ""))
