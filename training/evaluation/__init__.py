"""Model evaluation and selection: holdout metrics, the acceptance gate and its evidence."""
