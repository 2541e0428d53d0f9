"""A pandas-mode on-demand view, as users' repos write them (Feast's default mode).

A copy of the demo's repo gains a pandas-mode twin of the python-mode view (the same logic,
written over DataFrames) and a feature service serving both. The predictor's path (HMGETs
from Redis, decode, transform) must serve the twin exactly what the python-mode view
serves, and exactly what training's point-in-time retrieval gives the twin, value by value,
missing inputs included.
"""

from __future__ import annotations

import math
import shutil
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from service.online import NULL_VALUE, PRESENT, OnlinePlan
from skewless.contract import resolve_service
from skewless.feast_cli import open_store, run_feast
from skewless.settings import Settings
from tests.support.demo import REPO_FILES
from tests.support.pandas_mode import with_pandas_twin
from training.dataset import plan_retrieval, retrieve_in_order

pytestmark = pytest.mark.redis

SERVICE = "fraud_model_pandas"
PYTHON_VIEW, PANDAS_VIEW = "transaction_features", "transaction_features_pandas"
OUTPUTS = ("log_amount", "amount_to_mean_28d", "amount_to_max_28d", "is_online", "is_night")

SERVICE_DEFINITION = f'''
from on_demand import transaction_features_pandas

{SERVICE} = FeatureService(
    name="{SERVICE}",
    features=[card_activity_fv, transaction_features, transaction_features_pandas],
)
'''


def repo_with_pandas_twin(demo, root: Path) -> Settings:
    repo = root / "feature_repo"
    (repo / "data").mkdir(parents=True)
    for name in REPO_FILES:
        shutil.copy(demo.settings.repo_path / name, repo / name)
    shutil.copy(demo.settings.repo_path / "data" / "registry.db", repo / "data" / "registry.db")
    for table in demo.settings.data_dir.glob("*.parquet"):  # the sources, read where they are
        (repo / "data" / table.name).symlink_to(table)
    on_demand = repo / "on_demand.py"
    on_demand.write_text(with_pandas_twin(on_demand.read_text()))
    services = repo / "feature_services.py"
    services.write_text(services.read_text() + SERVICE_DEFINITION)
    settings = demo.settings.model_copy(update={"repo_path": repo, "var_dir": root / "var"})
    run_feast(settings, "apply")
    return settings


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


@pytest.fixture(scope="module")
def twin(demo, redis_server, tmp_path_factory):
    settings = repo_with_pandas_twin(demo, tmp_path_factory.mktemp("pandas-mode"))
    run_feast(settings, "materialize", "--views", "card_activity", "2015-01-01T00:00:00",
              demo.cutoff.strftime("%Y-%m-%dT%H:%M:%S"))
    store = open_store(settings)
    spec = resolve_service(store, SERVICE)
    return settings, store, spec, OnlinePlan.from_store(store, spec)


def requests_for(demo) -> list[dict[str, object]]:
    table = pd.read_parquet(demo.settings.data_dir / "card_activity.parquet")
    table = table.sort_values(["event_timestamp", "created_timestamp"])
    latest = table.groupby("card_id").tail(1)
    fresh = latest[latest["event_timestamp"] >= pd.Timestamp(demo.cutoff) - timedelta(days=2)]
    cards = [int(c) for c in fresh["card_id"].sample(5, random_state=3)]
    rows: list[dict[str, object]] = [
        {"card_id": cards[0], "amount": 12.5, "channel": "online", "local_hour": 3},
        {"card_id": cards[1], "amount": 0.0, "channel": "pos", "local_hour": 14},
        {"card_id": cards[2], "amount": 980.25, "channel": "atm", "local_hour": 23},
        {"card_id": cards[3], "amount": -4.0, "channel": "online", "local_hour": 0},
        # No history: the batch inputs are missing, the ratios must be too.
        {"card_id": 1, "amount": 55.0, "channel": "pos", "local_hour": 5},
        # Missing request fields.
        {"card_id": cards[4], "amount": 20.0, "channel": None, "local_hour": None},
    ]
    return rows


def serve(plan: OnlinePlan, redis_server, rows, now: float):
    client = redis_server.client()
    pipe = client.pipeline(transaction=False)
    for key, fields in plan.commands(rows):
        pipe.hmget(key, list(fields))
    features = plan.decode(pipe.execute(), len(rows), now)
    plan.transform(features, rows, now)
    return features


def test_a_pandas_mode_view_serves_what_its_python_twin_and_training_give(demo, redis_server,
                                                                          twin):
    settings, store, spec, plan = twin
    assert [s.view.mode for s in plan.on_demand] == ["python", "pandas"]
    rows = requests_for(demo)
    now = demo.cutoff.timestamp() + 60
    served = serve(plan, redis_server, rows, now)
    names = [f.name for f in spec.features]

    # Training's point-in-time retrieval of the same rows, a minute after the cut-off.
    events = pa.Table.from_pylist([
        {**r, "event_id": i, "ts": demo.cutoff + timedelta(minutes=1)} for i, r in enumerate(rows)
    ], schema=pa.schema([("card_id", pa.int64()), ("amount", pa.float64()),
                         ("channel", pa.string()), ("local_hour", pa.int64()),
                         ("event_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC"))]))
    trained = retrieve_in_order(store, plan_retrieval(spec), spec, events, "event_id", "ts")

    for i, row in enumerate(rows):
        for output in OUTPUTS:
            pandas_pos = names.index(f"{PANDAS_VIEW}__{output}")
            python_pos = names.index(f"{PYTHON_VIEW}__{output}")
            value = served.values[i][pandas_pos]
            # The twin serves exactly the python-mode view's value and status ...
            assert same(value, served.values[i][python_pos]), (row, output)
            assert served.statuses[i][pandas_pos] == served.statuses[i][python_pos]
            # ... and exactly what training gives it (null there is missing here).
            expected = trained.column(f"{PANDAS_VIEW}__{output}")[i].as_py()
            assert same(value, expected), (row, output, value, expected)
    # The missing inputs were missing, not zero.
    no_history, no_request = served.values[4], served.values[5]
    for output, row in (("amount_to_mean_28d", no_history), ("amount_to_max_28d", no_history),
                        ("is_online", no_request), ("is_night", no_request)):
        assert row[names.index(f"{PANDAS_VIEW}__{output}")] is None
    assert served.statuses[4][names.index(f"{PANDAS_VIEW}__amount_to_mean_28d")] == NULL_VALUE
    assert served.statuses[0][names.index(f"{PANDAS_VIEW}__log_amount")] == PRESENT
    assert type(served.values[0][names.index(f"{PANDAS_VIEW}__is_online")]) is int

