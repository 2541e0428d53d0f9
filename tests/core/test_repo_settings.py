"""The repo's settings file: `<repo>/skewless.env`, found through SKEWLESS_REPO_PATH.

Precedence, highest first: explicit values, the environment, the working directory's .env,
the repo's file, the defaults. Relative paths in the repo file are the repo's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skewless.errors import InvalidInput
from skewless.settings import PROJECT_ROOT, REPO_SETTINGS_FILE, Settings, get_settings


class SettingsBeforeRepoFiles(Settings):
    """Settings with pydantic-settings' default sources only, as they were read before."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        return init_settings, env_settings, dotenv_settings, file_secret_settings


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "team_repo"
    repo.mkdir()
    (repo / REPO_SETTINGS_FILE).write_text(
        "# the team's label source\n"
        "SKEWLESS_FEATURE_SERVICE=team_model_v1\n"
        "SKEWLESS_VAR_DIR=.skewless\n"
        "SKEWLESS_EVENTS_PATH=data/events.parquet\n"
        "SKEWLESS_LABELS_PATH=/shared/labels.parquet\n"
        "SKEWLESS_LABEL_COLUMN=is_late\n"
        "SKEWLESS_SEED=21\n")
    return repo


def test_the_repo_file_is_found_through_the_environment_from_any_directory(
        clean_env, repo, monkeypatch):
    monkeypatch.setenv("SKEWLESS_REPO_PATH", str(repo))
    settings = Settings()
    assert settings.repo_path == repo
    assert settings.feature_service == "team_model_v1"
    assert settings.label_column == "is_late"
    assert settings.seed == 21
    # Relative paths in the repo file are the repo's; absolute ones stay as written.
    assert settings.var_dir == repo / ".skewless"
    assert settings.resolved_events_path == repo / "data" / "events.parquet"
    assert settings.resolved_labels_path == Path("/shared/labels.parquet")
    assert settings.repo_settings_path == repo / REPO_SETTINGS_FILE


def test_the_repo_file_is_found_through_the_working_directorys_dotenv(clean_env, repo):
    (clean_env / ".env").write_text(f"SKEWLESS_REPO_PATH={repo}\n")
    assert Settings().feature_service == "team_model_v1"


def test_a_relative_repo_path_from_the_environment_means_the_working_directorys(
        clean_env, repo, monkeypatch):
    monkeypatch.setenv("SKEWLESS_REPO_PATH", os.path.relpath(repo, clean_env))
    settings = Settings()
    assert settings.repo_path == Path("..", repo.name)  # as given, relative to the cwd
    assert settings.var_dir == repo.resolve() / ".skewless"


def test_explicit_values_the_environment_and_dotenv_beat_the_repo_file(
        clean_env, repo, monkeypatch):
    monkeypatch.setenv("SKEWLESS_REPO_PATH", str(repo))
    monkeypatch.setenv("SKEWLESS_FEATURE_SERVICE", "from_environment")
    monkeypatch.setenv("SKEWLESS_VAR_DIR", "state")  # relative: still the working directory's
    (clean_env / ".env").write_text("SKEWLESS_FEATURE_SERVICE=from_dotenv\n"
                                    "SKEWLESS_LABEL_COLUMN=from_dotenv\n")
    settings = Settings()
    assert settings.feature_service == "from_environment"
    assert settings.label_column == "from_dotenv"
    assert settings.var_dir == Path("state")
    assert settings.seed == 21  # what nothing above sets still comes from the repo file
    assert get_settings(seed=3, label_column="explicit").label_column == "explicit"
    assert get_settings(seed=3).seed == 3


def test_an_explicit_repo_path_reads_that_repos_file(clean_env, repo):
    assert Settings(repo_path=repo).feature_service == "team_model_v1"
    assert Settings(repo_path=repo.parent).feature_service == "fraud_model_v1"


def test_a_repo_file_naming_the_repo_is_refused(clean_env, repo):
    with (repo / REPO_SETTINGS_FILE).open("a") as file:
        file.write("SKEWLESS_REPO_PATH=/somewhere/else\n")
    with pytest.raises(InvalidInput, match="cannot choose the repo it is read from"):
        Settings(repo_path=repo)


def test_without_a_repo_file_settings_are_read_exactly_as_before(clean_env, tmp_path,
                                                                 monkeypatch):
    # The demo's repo carries its own evaluation settings (slices, groups, costs), and only
    # those; a repo without the file reads exactly as before.
    assert (PROJECT_ROOT / "feature_repo" / REPO_SETTINGS_FILE).exists()
    assert Settings().model_fields_set == {"slices", "inclusion_groups",
                                           "decision_amount_column", "decision_review_fee"}
    bare = tmp_path / "bare_repo"
    bare.mkdir()
    assert Settings(repo_path=bare).model_dump() == SettingsBeforeRepoFiles(
        repo_path=bare).model_dump()
    assert Settings(repo_path=bare).model_fields_set == {"repo_path"}

    (clean_env / ".env").write_text(f"SKEWLESS_REPO_PATH={tmp_path}\nSKEWLESS_SEED=4\n")
    monkeypatch.setenv("SKEWLESS_EVENTS_PATH", "events.parquet")
    for explicit in ({}, {"var_dir": "state", "feature_service": "svc"}):
        now, before = Settings(**explicit), SettingsBeforeRepoFiles(**explicit)
        assert now.model_dump() == before.model_dump()
        assert now.model_fields_set == before.model_fields_set
