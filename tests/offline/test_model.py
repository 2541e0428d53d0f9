"""Model tests: artefact integrity, the feature contract, behaviour, and a quality floor."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from skewless.artifact import ArtifactError, load_artifact, sha256_file
from skewless.contract import ModelContract, contract_differences, resolve_service
from training.train import to_matrix


def test_quality_floor_holdout_auc_at_least_95_percent_of_bayes(demo):
    metrics = demo.model.holdout
    assert metrics.roc_auc >= 0.95 * metrics.bayes_auc
    assert metrics.auc_to_bayes == pytest.approx(metrics.roc_auc / metrics.bayes_auc)
    assert metrics.expected_calibration_error < 0.02


def test_split_is_by_time_train_before_validation_before_holdout(demo):
    training = demo.model.contract.training
    windows = training.windows
    assert windows["train_from"] < windows["validation_from"] < windows["holdout_from"]
    rows = training.rows
    assert sum(rows.values()) == len(demo.training_set.frame)


def test_artifact_is_lightgbm_text_with_matching_sha256(demo):
    directory = demo.model.directory
    contract = json.loads((directory / "contract.json").read_text())
    assert (directory / "model.txt").read_text().startswith("tree\n")
    assert contract["model"]["sha256"] == sha256_file(directory / "model.txt")
    assert not list(directory.glob("*.pkl")) and not list(directory.glob("*.pickle"))
    loaded = load_artifact(directory)
    assert loaded.booster.feature_name() == [f["name"] for f in contract["features"]]


def test_contract_records_what_a_registry_needs(demo):
    contract = json.loads((demo.model.directory / "contract.json").read_text())
    for key in ("feature_service", "fingerprint", "features", "entity_keys", "request_fields",
                "definitions", "categories", "training", "parameters", "metrics", "baseline",
                "feature_importance_gain", "libraries", "model"):
        assert key in contract, key
    assert [k["name"] for k in contract["entity_keys"]] == ["card_id", "merchant_id"]
    assert {r["name"] for r in contract["request_fields"]} == {"amount", "channel", "local_hour"}
    baseline = contract["baseline"]["features"]["card_activity__amount_mean_28d"]
    assert baseline["psi_bin_edges"] == sorted(baseline["psi_bin_edges"])
    assert sum(baseline["psi_bin_shares"]) == pytest.approx(1.0)
    assert contract["libraries"]["lightgbm"]


def test_a_corrupt_or_tampered_artifact_is_refused(demo, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(demo.model.directory, copy)
    with (copy / "model.txt").open("a") as fh:
        fh.write("\n")
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(copy)
    (copy / "model.txt").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_artifact(copy)


def test_contract_matches_the_current_definitions_and_names_a_change(demo):
    store = demo.store()
    spec = resolve_service(store, demo.settings.feature_service)
    assert contract_differences(demo.model.contract, spec) == []
    changed = demo.model.contract.to_json()
    changed["definitions"]["views"]["card_activity"]["ttl_seconds"] = 1
    changed["fingerprint"] = "sha256:other"
    problems = contract_differences(ModelContract.model_validate(changed), spec)
    assert problems == ["definitions fingerprint differs (changed views: card_activity)"]
    changed["features"] = changed["features"][:-1]
    assert any("served but the model was not trained on it" in p
               for p in contract_differences(ModelContract.model_validate(changed), spec))


def test_transformation_code_is_part_of_the_fingerprint(demo):
    spec = resolve_service(demo.store(), demo.settings.feature_service)
    code = spec.definitions["views"]["transaction_features"]["transformation"]
    assert "amount_to_mean_28d" in code
    altered = json.loads(json.dumps(spec.definitions))
    altered["views"]["transaction_features"]["transformation"] = code.replace("log1p", "log")
    from skewless.contract import fingerprint

    assert fingerprint(altered) != spec.fingerprint


def _as_version_1(definitions: dict, source_class: str) -> dict:
    """Definitions as fingerprint version 1 wrote them: each source's class and file name."""
    old = json.loads(json.dumps(definitions))
    old.pop("fingerprint_version")
    for name, view in old["views"].items():
        if view["kind"] == "batch":
            view["source"].update(type=source_class, file=f"{name}.parquet")
    return old


@pytest.mark.parametrize("source_class", ["FileSource", "SparkSource"])
def test_a_version_1_contract_keeps_verifying_whatever_its_source_class(demo, source_class):
    """Fingerprints no longer cover a source's class or path (one definition set, rendered for
    DuckDB or Spark); a contract registered under version 1 still verifies, on either."""
    from skewless.contract import current_fingerprint, fingerprint

    spec = resolve_service(demo.store(), demo.settings.feature_service)
    for view in spec.definitions["views"].values():
        assert "type" not in view.get("source", {}) and "file" not in view.get("source", {})
    old = demo.model.contract.to_json()
    old["definitions"] = _as_version_1(spec.definitions, source_class)
    old["fingerprint"] = fingerprint(old["definitions"])
    assert old["fingerprint"] != spec.fingerprint
    contract = ModelContract.model_validate(old)
    assert current_fingerprint(contract) == spec.fingerprint
    assert contract_differences(contract, spec) == []
    # Upgraded only when its definitions are what its fingerprint was made of.
    old["definitions"]["views"]["card_activity"]["ttl_seconds"] = 1
    tampered = ModelContract.model_validate(old)
    assert current_fingerprint(tampered) == old["fingerprint"]
    assert contract_differences(tampered, spec) == [
        "definitions fingerprint differs (changed views: card_activity)"]


def test_a_far_larger_amount_never_lowers_the_score(demo):
    """Behaviour: ten times the amount, through Feast's own on-demand view, all else equal."""
    store = demo.store()
    odfv = store.get_on_demand_feature_view("transaction_features")
    contract = demo.model.contract
    specs = demo.training_set.service.features
    frame = demo.training_set.frame.sample(3000, random_state=4).reset_index(drop=True)
    tx = demo.data.transactions.set_index("transaction_id").loc[frame["transaction_id"]]
    bigger = frame.copy()
    inputs = {
        "amount": (tx["amount"].to_numpy() * 10).tolist(),
        "channel": tx["channel"].tolist(),
        "local_hour": tx["local_hour"].tolist(),
        "amount_mean_28d": [None if v is None or v != v else float(v) for v in
                            frame["card_activity__amount_mean_28d"].astype(object)],
        "amount_max_28d": [None if v is None or v != v else float(v) for v in
                           frame["card_activity__amount_max_28d"].astype(object)],
    }
    out = odfv.feature_transformation.udf(inputs)
    for name, values in out.items():
        bigger[f"transaction_features__{name}"] = np.array(
            [np.nan if v is None else v for v in values], dtype=float)
    booster = demo.model.booster
    categories = contract.categories
    before = booster.predict(to_matrix(frame, specs, categories))
    after = booster.predict(to_matrix(bigger, specs, categories))
    assert (after >= before - 1e-12).all()
    assert (after > before).mean() > 0.5


def test_latest_artifact_is_the_newest_version_and_absence_is_named(demo, tmp_path):
    from skewless.artifact import latest_artifact_dir

    newest = latest_artifact_dir(demo.settings.model_dir, demo.settings.feature_service)
    assert newest == demo.model.directory
    assert load_artifact(newest).version == demo.model.contract.version
    with pytest.raises(ArtifactError, match="no trained model for other_service"):
        latest_artifact_dir(tmp_path, "other_service")
