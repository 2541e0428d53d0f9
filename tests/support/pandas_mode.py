"""The demo's on-demand view written in pandas mode, Feast's default, as most repos write it.

The same logic as feature_repo/on_demand.py's python-mode ``transaction_features`` over
DataFrames, so it must give the same values. Used by the pandas-mode serving test (as a twin
beside the python-mode view) and by ``make bench-serve`` (in its place).
"""

from __future__ import annotations

import re

# The function, named by the caller; the module must import pandas as pd (annotations).
PANDAS_FUNCTION = '''\
def {name}(inputs: pd.DataFrame) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    amount = inputs["amount"].astype("float64")
    out = pd.DataFrame(index=inputs.index)
    out["log_amount"] = np.log1p(amount.clip(lower=0.0))
    for name, column in (("amount_to_mean_28d", "amount_mean_28d"),
                         ("amount_to_max_28d", "amount_max_28d")):
        denominator = inputs[column].astype("float64")
        out[name] = (amount / denominator).where(denominator > 0)
    channel, hour = inputs["channel"], inputs["local_hour"]
    out["is_online"] = (channel == "online").astype("Int64").where(channel.notna())
    out["is_night"] = (hour < 6).astype("Int64").where(hour.notna())
    return out
'''

# A second view beside the python-mode one: same sources and outputs, another name.
PANDAS_TWIN = '''

@on_demand_feature_view(
    sources=[
        card_activity_fv[["amount_mean_28d", "amount_max_28d"]],
        transaction_request,
    ],
    schema=[
        Field(name="log_amount", dtype=Float64),
        Field(name="amount_to_mean_28d", dtype=Float64),
        Field(name="amount_to_max_28d", dtype=Float64),
        Field(name="is_online", dtype=Int64),
        Field(name="is_night", dtype=Int64),
    ],
)
''' + PANDAS_FUNCTION.format(name="transaction_features_pandas")


def with_pandas_twin(on_demand_py: str) -> str:
    """on_demand.py with ``transaction_features_pandas`` added beside the python-mode view."""
    return "import pandas as pd\n" + on_demand_py + PANDAS_TWIN


def in_pandas_mode(on_demand_py: str) -> str:
    """on_demand.py with ``transaction_features`` itself in pandas mode: same name, schema
    and tags, so a model trained on it has the same features as the demo's."""
    decorated, found = re.subn(r'\n    mode="python",\n', "\n    mode=\"pandas\",\n",
                               on_demand_py)
    head, sep, _ = decorated.partition("def transaction_features(")
    if found != 1 or not sep:
        raise ValueError("on_demand.py no longer has the python-mode transaction_features")
    return "import pandas as pd\n" + head + PANDAS_FUNCTION.format(name="transaction_features")
