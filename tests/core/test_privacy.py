"""Privacy classes: the demo classifies every entity key, feature and request field; a
definition without one (or with a value that is not a class) is named, and the doctor warns.

The definitions are read as `feast plan` reads them (Feast's own parse of the repo's Python
files, in a child process), so what is checked is what `feast apply` would register.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from skewless.definitions import RegistrySnapshot, parse_repo_definitions
from skewless.doctor import privacy_finding
from skewless.privacy import CLASSES, privacy_class, unclassified
from skewless.settings import PROJECT_ROOT, feast_process_env
from tests.support.demo import copy_feature_repo


def definitions(repo: Path) -> RegistrySnapshot:
    return parse_repo_definitions(repo, feast_process_env("127.0.0.1:1"))


def missing(snapshot: RegistrySnapshot) -> list[str]:
    return [m.describe() for m in unclassified(
        snapshot.entities(), snapshot.feature_views(),
        [d.view for d in snapshot.on_demand_views()])]


def test_every_entity_key_feature_and_request_field_of_the_demo_has_a_class():
    snapshot = definitions(PROJECT_ROOT / "feature_repo")
    assert missing(snapshot) == []
    assert privacy_finding(snapshot).status == "ok"
    classes = {f"{v.name}__{f.name}": privacy_class(f.tags, v.tags, f.name)
               for v in snapshot.feature_views() for f in v.features}
    odfv = snapshot.on_demand_views()[0].view
    classes.update({f"{odfv.name}__{f.name}": privacy_class(f.tags, odfv.tags, f.name)
                    for f in odfv.features})
    assert classes["card_profile__credit_limit"] == "personal"
    assert classes["merchant_stats__merchant_fraud_rate_56d"] == "none"
    assert classes["transaction_features__log_amount"] == "pseudonymous"
    assert set(classes.values()) <= set(CLASSES)
    keys = {e.join_key: privacy_class(e.tags) for e in snapshot.entities()
            if not e.name.startswith("__")}
    assert keys == {"card_id": "pseudonymous", "merchant_id": "none"}


def test_a_definition_without_a_class_is_named_and_the_doctor_warns(tmp_path):
    repo = copy_feature_repo(tmp_path / "repo")
    edits = {
        "features.py": [('tags={"kind": "attribute", "privacy": "personal"}',
                         'tags={"kind": "attribute"}'),
                        ('"cadence": "daily", "privacy": "none",', '"cadence": "daily",')],
        "data_sources.py": [('description="pos, online or atm.",\n              '
                             'tags={"privacy": "pseudonymous"}',
                             'description="pos, online or atm.",\n              '
                             'tags={"privacy": "secret"}')],
        "entities.py": [('"privacy": "none"}', '}')],
    }
    for name, changes in edits.items():
        text = (repo / name).read_text()
        for old, new in changes:
            assert old in text, (name, old)
            text = text.replace(old, new)
        (repo / name).write_text(text)
    snapshot = definitions(repo)
    merchant = [f"feature merchant_stats__{f.name} has no privacy tag"
                for f in snapshot.feature_view("merchant_stats").features]
    assert sorted(missing(snapshot)) == sorted([
        "entity key merchant_id has no privacy tag",
        "feature card_profile__credit_limit has no privacy tag",
        *merchant,
        "request field channel has privacy 'secret', not one of none, pseudonymous, personal",
    ])
    finding = privacy_finding(snapshot)
    assert finding.status == "warn" and finding.found.startswith(f"{len(merchant) + 3} without")


def test_freshness_objectives_parse_and_a_bad_one_is_named():
    from skewless.doctor import freshness_finding
    from skewless.freshness import FreshnessError, parse_objective

    assert parse_objective("v", "30h") == 108000 and parse_objective("v", "90m") == 5400
    assert parse_objective("v", "2d") == 172800 and parse_objective("v", "3600") == 3600
    assert parse_objective("v", "none") is None and parse_objective("v", None) is None
    for bad in ("soon", "-1h", "0", "3 weeks"):
        with pytest.raises(FreshnessError, match="feature view v: freshness-objective"):
            parse_objective("v", bad)
    finding = freshness_finding(definitions(PROJECT_ROOT / "feature_repo"))
    assert finding.status == "ok"
    assert finding.found == "card_activity 30 h; merchant_stats 30 h"


def test_feast_rehydrates_the_demos_on_demand_text_without_its_pickled_body():
    """Feast defines an on-demand view from its registered text first and falls back to the
    pickled body without a word when the text does not run: a lone single quote in a comment
    inside the decorator is enough (its decorator scanner reads it as a string). The demo's
    text must define the function on its own."""
    from feast.transformation.udf_rehydrate import rehydrate_udf_from_source

    odfv = definitions(PROJECT_ROOT / "feature_repo").on_demand_views()[0]
    function = rehydrate_udf_from_source(odfv.source.text, preferred_name=odfv.name)
    assert callable(function) and function.__name__ == odfv.name
