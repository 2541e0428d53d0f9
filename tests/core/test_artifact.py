"""Model artefacts: read once under a size limit, hashed, parsed from the bytes hashed; a
contract that names a path; and the check process that parses a new artefact before any
serving process does — refusing what LightGBM rejects, crashes on, or takes too long or too
much memory to parse. Real LightGBM models, real files, real child processes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from skewless import artifact as artifact_module
from skewless.artifact import (
    ArtifactCheckFailed,
    ArtifactError,
    ArtifactLimits,
    check_artifact,
    load_artifact,
)
from skewless.db import upgrade
from skewless.registry import ArtifactRefused, Registry, load_registered
from tests.support.artifacts import model_text, sha256_text, write_artifact

# A malformed tree makes LightGBM's parser raise inside an OpenMP loop: std::terminate, SIGABRT.
CRASHING_TEXT = model_text().replace("num_cat=0\n", "", 1)


@pytest.fixture
def registry(tmp_path):
    url = f"sqlite:///{tmp_path / 'meta.db'}"
    upgrade(url)
    registry = Registry(url)
    yield registry
    registry.close()


def registry_with(registry: Registry, **limits) -> Registry:
    return Registry(registry.url, registry.engine, ArtifactLimits(**limits))


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


def test_a_model_file_over_the_limit_is_refused_unread(tmp_path, registry):
    directory = write_artifact(tmp_path / "m", "v1")
    size = (directory / "model.txt").stat().st_size
    with pytest.raises(ArtifactError, match=rf"holds {size:,} bytes, over the limit of "
                       rf"1,000 bytes \(SKEWLESS_MODEL_MAX_BYTES\)"):
        load_artifact(directory, max_bytes=1000)
    assert load_artifact(directory, max_bytes=size).booster.num_trees() == 3
    small = registry_with(registry, max_bytes=1000)
    with pytest.raises(ArtifactRefused, match=r"not registered: .*over the limit of 1,000 bytes "
                       r"\(SKEWLESS_MODEL_MAX_BYTES\)"):
        small.register(directory)
    assert registry.versions() == []


def test_a_model_file_that_is_no_regular_file_is_refused_without_waiting(tmp_path):
    directory = write_artifact(tmp_path / "m", "v1")
    (directory / "model.txt").unlink()
    os.mkfifo(directory / "model.txt")  # opening it for reading would wait for a writer
    started = time.monotonic()
    with pytest.raises(ArtifactError, match="model.txt is not a regular file"):
        load_artifact(directory)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("name", ["../x.txt", "/etc/passwd", "sub/model.txt", "..\\x.txt", "",
                                  ".."])
def test_a_contract_naming_a_path_instead_of_a_file_name_is_refused(tmp_path, registry, name):
    # A valid model outside the artefact's directory, with the digest the contract names: a
    # loader that followed the path would load it.
    (tmp_path / "x.txt").write_text(model_text())
    directory = write_artifact(tmp_path / "m", "v1", file=name)
    with pytest.raises(ArtifactError, match=r"not a model contract: model\.file: .*plain file "
                       "name"):
        load_artifact(directory)
    with pytest.raises(ArtifactError, match=r"model\.file: .*plain file name"):
        registry.register(directory)
    assert registry.versions() == []


# The check process -------------------------------------------------------------------------

def test_a_good_artefact_is_checked_in_a_child_and_registered_with_the_record(tmp_path,
                                                                               registry):
    directory = write_artifact(tmp_path / "m", "v1")
    row = registry.register(directory)
    assert row.artifact_checked_at is not None
    check = registry.get("fraud", "v1").details()["transitions"][0]["evidence"]["artifact_check"]
    assert check["sha256"] == sha256_text(model_text()) == row.sha256
    assert (check["version"], check["trees"], check["features"]) == ("v1", 3, 2)
    assert "RLIMIT_DATA" in check["memory_limit"]
    assert len(check["smoke_scores"]) == 2 and 0 < check["smoke_scores"][0] < 1
    assert load_registered(row).booster.num_trees() == 3


def test_a_model_text_lightgbm_rejects_is_refused_at_registration(tmp_path, registry):
    directory = write_artifact(tmp_path / "m", "v1", text="tree\nnot a model\n")
    with pytest.raises(ArtifactRefused, match="not registered: .*is not a LightGBM text model: "
                       "Model file doesn't specify the number of classes"):
        registry.register(directory)
    assert registry.versions() == []


def test_a_model_text_that_crashes_the_parser_is_refused_at_registration(tmp_path, registry):
    directory = write_artifact(tmp_path / "m", "v1", text=CRASHING_TEXT)
    with pytest.raises(ArtifactRefused, match="LightGBM crashed on the model in .*killed by "
                       "SIGABRT after '.*Fatal.*'; refused"):
        registry.register(directory)
    assert registry.versions() == []


def test_a_check_that_outlives_its_time_limit_is_refused(tmp_path, registry):
    directory = write_artifact(tmp_path / "m", "v1")
    hasty = registry_with(registry, check_timeout_seconds=0.05)
    started = time.monotonic()
    with pytest.raises(ArtifactRefused, match=r"did not finish within 0\.05 s "
                       r"\(SKEWLESS_MODEL_CHECK_TIMEOUT_SECONDS\); refused"):
        hasty.register(directory)
    assert time.monotonic() - started < 5  # the child was killed, not waited for
    assert registry.versions() == []


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


# What serving processes parse -------------------------------------------------------------

def test_bytes_changed_after_registration_are_refused_naming_both_digests(tmp_path, registry):
    directory = write_artifact(tmp_path / "m", "v1")
    row = registry.register(directory)
    (directory / "model.txt").write_text(model_text(rounds=7))
    with pytest.raises(ArtifactError, match=rf"sha256 {sha256_text(model_text(rounds=7))} does "
                       rf"not match the checked and registered {row.sha256}"):
        load_registered(row)
    with pytest.raises(ArtifactRefused, match="does not match"):
        registry.check("fraud", "v1", "auditor")
    (event,) = registry.audit_events(limit=1)
    assert (event.action, event.target, event.outcome) == ("check artefact", "fraud/v1",
                                                           "refused")


def test_a_rewritten_directory_is_refused_even_with_a_matching_contract(tmp_path, registry):
    """A directory rewritten whole (model and contract agreeing) is not what was checked."""
    directory = write_artifact(tmp_path / "m", "v1")
    row = registry.register(directory)
    write_artifact(directory, "v1", text=model_text(rounds=7))
    with pytest.raises(ArtifactError, match=f"not the {row.sha256} it was checked and "
                       "registered with"):
        load_registered(row)


def test_a_version_without_a_recorded_check_is_not_parsed_until_checked(tmp_path, registry):
    directory = write_artifact(tmp_path / "m", "v1")
    registry.register(directory)
    with registry.engine.begin() as connection:  # as a version registered before checks
        connection.execute(sa.text("UPDATE model_versions SET artifact_checked_at = NULL"))
    row = registry.get("fraud", "v1")
    with pytest.raises(ArtifactError, match="no recorded artefact check .* `skewless models "
                       "check fraud v1`"):
        load_registered(row)
    checked = registry.check("fraud", "v1", "auditor")
    assert checked.artifact_checked_at is not None
    assert load_registered(checked).booster.num_trees() == 3
    event = registry.audit_events(limit=1)[0]
    assert (event.outcome, event.detail["artifact_check"]["trees"]) == ("passed", 3)


def test_promotion_and_rollback_check_a_version_that_never_was(tmp_path, registry):
    for version in ("v1", "v2"):
        registry.register(write_artifact(tmp_path / version, version))
    with registry.engine.begin() as connection:
        connection.execute(sa.text("UPDATE model_versions SET artifact_checked_at = NULL"))
    registry.promote("fraud", "v1", "a", "first", {}, expected_production=None)
    assert registry.get("fraud", "v1").artifact_checked_at is not None
    assert registry.get("fraud", "v2").artifact_checked_at is None
    registry.promote("fraud", "v2", "a", "second", {}, expected_production="v1")
    with registry.engine.begin() as connection:
        connection.execute(sa.text("UPDATE model_versions SET artifact_checked_at = NULL "
                                   "WHERE version = 'v1'"))
    (tmp_path / "v1" / "model.txt").write_text(CRASHING_TEXT)  # v1's file, broken since
    with pytest.raises(ArtifactRefused, match="does not match"):
        registry.rollback("fraud", "a", "back")
    assert registry.production_version("fraud") == "v2"  # nothing changed


def test_the_check_command_checks_unchecked_versions_and_exits_1_on_a_refusal(tmp_path,
                                                                              registry):
    from typer.testing import CliRunner

    from skewless.cli import app as cli

    for version in ("v1", "v2"):
        registry.register(write_artifact(tmp_path / version, version))
    with registry.engine.begin() as connection:
        connection.execute(sa.text("UPDATE model_versions SET artifact_checked_at = NULL"))
    (tmp_path / "v2" / "model.txt").write_text("tampered")
    env = {"SKEWLESS_DATABASE_URL": registry.url, "SKEWLESS_VAR_DIR": str(tmp_path / "var")}
    result = CliRunner().invoke(cli, ["models", "check", "fraud", "--json"], env=env)
    assert result.exit_code == 1, result.output
    outcome = json.loads(result.output)
    assert outcome["v1"]["checked"] and not outcome["v2"]["checked"]
    assert "does not match" in outcome["v2"]["error"]
    assert registry.get("fraud", "v1").artifact_checked_at is not None
    again = CliRunner().invoke(cli, ["models", "check", "fraud", "v1"], env=env)
    assert again.exit_code == 0 and "fraud v1: checked" in again.output
