"""What the experiment tests share: a small training set and a search space that stays quick.

A tenth of the demo's training set (its time windows intact) and a space of small trees: the
demo's monotone constraints (LightGBM's "advanced" method) make a tree of a hundred leaves or
more cost seconds per round, while what these tests check — recording, pruning, seeding,
pages — does not depend on the range searched.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from training.dataset import TrainingSet
from training.experiment import SEARCH_SPACE, Dimension

QUICK_SPACE: dict[str, Dimension] = {
    **SEARCH_SPACE,
    "learning_rate": Dimension(0.05, 0.3, log=True),
    "num_leaves": Dimension(4, 24, log=True, integer=True),
    "min_data_in_leaf": Dimension(50, 1000, log=True, integer=True),
}


def small_training_set(ts: TrainingSet, path: Path, fraction: float = 0.1) -> Path:
    """A random ``fraction`` of ``ts``'s rows, in time order, written to ``path``."""
    frame = ts.frame.sample(frac=fraction, random_state=3).sort_values(ts.timestamp_column)
    return replace(ts, frame=frame.reset_index(drop=True)).write(path)
