"""Model artefacts: read once under a size limit, hashed, parsed from the bytes hashed; a
contract that names a path; and the check process that parses a new artefact before any
serving process does — refusing what LightGBM rejects, crashes on, or takes too long or too
much memory to parse. Real LightGBM models, real files, real child processes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from skewless import artifact as artifact_module
from skewless.artifact import (
    ArtifactCheckFailed,
    ArtifactError,
    ArtifactLimits,
    check_artifact,
    load_artifact,
)
from tests.support.artifacts import model_text, sha256_text, write_artifact

# A malformed tree makes LightGBM's parser raise inside an OpenMP loop: std::terminate, SIGABRT.
CRASHING_TEXT = model_text().replace("num_cat=0\n", "", 1)


# Reading: once, capped, the bytes hashed are the bytes parsed ------------------------------

def test_the_bytes_parsed_are_the_bytes_hashed_even_if_the_file_is_swapped(tmp_path,
                                                                           monkeypatch):
    directory = write_artifact(tmp_path / "m", "v1")
    other = model_text(rounds=7)  # what an attacker swaps in once the digest was taken
    opened: list[str] = []
    real_open, real_sha256 = os.open, artifact_module.hashlib.sha256

    def counting_open(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_open(path, *args, **kwargs)

    class SwapAfterDigest:
        """sha256 as usual; the moment its digest is read, model.txt is replaced."""

        def __init__(self, data: bytes = b"") -> None:
            self.digest = real_sha256(data)

        def update(self, data: bytes) -> None:
            self.digest.update(data)

        def hexdigest(self) -> str:
            (tmp_path / "swap.txt").write_text(other)
            os.replace(tmp_path / "swap.txt", directory / "model.txt")
            return self.digest.hexdigest()

    monkeypatch.setattr(artifact_module.os, "open", counting_open)
    monkeypatch.setattr(artifact_module.hashlib, "sha256", SwapAfterDigest)
    loaded = load_artifact(directory)
    assert (directory / "model.txt").read_text() == other  # the swap happened
    assert loaded.booster.num_trees() == 3  # … and the model parsed is the one hashed
    assert opened.count("model.txt") == 1  # one read of the model file


def test_a_model_file_that_is_no_regular_file_is_refused_without_waiting(tmp_path):
    directory = write_artifact(tmp_path / "m", "v1")
    (directory / "model.txt").unlink()
    os.mkfifo(directory / "model.txt")  # opening it for reading would wait for a writer
    started = time.monotonic()
    with pytest.raises(ArtifactError, match="model.txt is not a regular file"):
        load_artifact(directory)
    assert time.monotonic() - started < 5


# The check process -------------------------------------------------------------------------

def test_a_check_over_its_memory_limit_is_refused(tmp_path):
    directory = write_artifact(tmp_path / "m", "v1")
    with pytest.raises(ArtifactCheckFailed, match=r"ran out of memory: .*1,048,576 bytes of "
                       "data SKEWLESS_MODEL_CHECK_MEMORY_BYTES allows"):
        check_artifact(directory, sha256_text(model_text()),
                       ArtifactLimits(check_memory_bytes=2**20))


def test_a_check_process_killed_by_a_signal_is_refused_naming_it(tmp_path):
    directory = write_artifact(tmp_path / "m", "v1")
    segfault = ["sh", "-c", "echo '[LightGBM] [Fatal] out of bounds' >&2; kill -SEGV $$"]
    with pytest.raises(ArtifactCheckFailed, match="killed by SIGSEGV after "
                       r"'\[LightGBM\] \[Fatal\] out of bounds'"):
        check_artifact(directory, "0" * 64, ArtifactLimits(), command=segfault)
