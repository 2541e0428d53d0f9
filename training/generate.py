"""Seeded generator of the demo domain: card transactions, fraud and its delayed labels.

The world is simple and fully known. Transactions happen at a per-card rate; amounts follow
each card's own log-normal habit; fraud is drawn from a known probability of the request and
the card's recent behaviour (how unusual the amount is for the card, the channel, the hour,
the merchant's hidden risk, and yesterday's activity). Each fraud label arrives as a
chargeback some days later, and each legitimate one when the transaction settles, so every
label carries its own ``label_timestamp``. Because the true probabilities are known, the
Bayes-optimal ROC AUC of the holdout window is written beside the data.

Everything is vectorised with numpy: the bench size (10M transactions) takes seconds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score

DAY = np.timedelta64(1, "D")
CATEGORIES = np.array(
    ["grocery", "restaurant", "fuel", "transport", "retail", "electronics", "travel", "online_services"]
)
CATEGORY_SHARE = np.array([0.24, 0.18, 0.12, 0.08, 0.16, 0.08, 0.06, 0.08])
CATEGORY_AMOUNT = np.array([0.9, 0.7, 1.0, 0.4, 1.3, 2.6, 3.2, 0.8])
CATEGORY_RISK = np.array([-0.6, -0.4, -0.3, -0.5, 0.0, 0.7, 0.6, 0.4])
CHANNELS = np.array(["pos", "online", "atm"])
CARD_TYPES = np.array(["debit", "credit", "prepaid"])
DRIFT_CATEGORIES = ("electronics", "online_services")
# The card-holder's age band: a label-event column for inclusion checks, never a feature.
AGE_BANDS = np.array(["18-29", "30-49", "50-64", "65+"])
AGE_SHARE = np.array([0.2, 0.36, 0.27, 0.17])
DISPARATE_BAND = 0  # "18-29": the band whose habits `disparity` changes

DEFAULT_CARDS = 2_000
DEFAULT_DAYS = 60
MEAN_DAILY_TRANSACTIONS = 3.0


@dataclass(frozen=True)
class GenerateConfig:
    """What to generate. ``end`` is the present unless given (then runs are reproducible)."""

    cards: int = DEFAULT_CARDS
    days: int = DEFAULT_DAYS
    merchants: int | None = None
    seed: int = 7
    end: datetime | None = None
    drift_day: int | None = None
    # From the drift day on, fraud in these merchant categories gains this many logits (a
    # concept drift: the same features, a new risk; categories a model thought safe decay it
    # fastest).
    drift_categories: tuple[str, ...] = DRIFT_CATEGORIES
    drift_bonus: float = 2.0
    holdout_days: float = 7.0
    # How much the youngest band's habits differ (0: not at all): wider amount swings and
    # more online payments. Fraud stays the same function of the transaction, so a model
    # flags that band more often without its labels being drawn differently.
    disparity: float = 0.0

    @property
    def merchant_count(self) -> int:
        return self.merchants or max(50, self.cards // 4)


@dataclass
class GeneratedData:
    cards: pd.DataFrame
    merchants: pd.DataFrame
    transactions: pd.DataFrame
    labels: pd.DataFrame
    truth: pd.DataFrame
    meta: dict


def _utc_now_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def fraud_logit(
    amount_z: np.ndarray,
    online: np.ndarray,
    night: np.ndarray,
    merchant_risk: np.ndarray,
    prev_day_count: np.ndarray,
    drift_bonus: np.ndarray,
) -> np.ndarray:
    """The known fraud log-odds of a transaction."""
    return (
        -6.8
        + 1.7 * np.clip(amount_z, -1.0, 3.0)
        + 1.0 * online
        + 0.9 * night
        + 1.0 * merchant_risk
        + 0.35 * np.minimum(prev_day_count, 8)
        + drift_bonus
    )


def generate(config: GenerateConfig) -> GeneratedData:
    """Simulate cards, merchants, transactions and labels; no per-row Python loops."""
    rng = np.random.default_rng(config.seed)
    end = np.datetime64((config.end or _utc_now_hour()).astimezone(UTC).replace(tzinfo=None), "us")
    start = end - np.timedelta64(config.days, "D")
    n_cards, n_merchants = config.cards, config.merchant_count

    # Cards: most existed before the window, some are issued inside it.
    new_card = rng.random(n_cards) < 0.2
    issue_offset_days = np.where(
        new_card, rng.uniform(0, config.days * 0.8, n_cards), -rng.uniform(30, 1500, n_cards)
    )
    issued_at = start + (issue_offset_days * 86_400e6).astype("timedelta64[us]")
    card_mu = rng.normal(3.4, 0.6, n_cards)  # log-amount habit
    card_rate = rng.gamma(2.0, MEAN_DAILY_TRANSACTIONS / 2.0, n_cards)
    card_type = CARD_TYPES[rng.choice(3, n_cards, p=[0.55, 0.4, 0.05])]
    # A stream of its own, so the other draws stay those of the same seed without it.
    age_idx = np.random.default_rng([config.seed, 1]).choice(len(AGE_BANDS), n_cards,
                                                             p=AGE_SHARE)
    disparate = age_idx == DISPARATE_BAND
    credit_limit = np.round(np.exp(rng.normal(8.0, 0.5, n_cards)), -2)
    cards = pd.DataFrame(
        {
            "card_id": np.arange(n_cards, dtype=np.int64) + 100_000,
            "issued_at": issued_at,
            "card_type": card_type,
            "credit_limit": credit_limit,
            "age_band": AGE_BANDS[age_idx],
        }
    )

    # Merchants: a category, a popularity and a hidden risk.
    category_idx = rng.choice(len(CATEGORIES), n_merchants, p=CATEGORY_SHARE)
    # A long tail without a giant: the most popular of a few hundred merchants takes 2-3%
    # of the payments (a Pareto tail gave one merchant a third of them).
    popularity = rng.lognormal(0.0, 1.0, n_merchants)
    popularity /= popularity.sum()
    merchant_risk = CATEGORY_RISK[category_idx] + rng.normal(0, 0.6, n_merchants)
    merchants = pd.DataFrame(
        {
            "merchant_id": np.arange(n_merchants, dtype=np.int64) + 5_000,
            "category": CATEGORIES[category_idx],
        }
    )

    # Without drift the world is stationary: as many older cards fall out of use inside the
    # window as new ones are issued, so the active population (and every merchant's volume)
    # stays level instead of growing.
    retired = ~new_card & (rng.random(n_cards) < new_card.mean() / max(1 - new_card.mean(), 1e-9))
    retired_at = np.where(retired, start + (rng.uniform(0, config.days * 0.8, n_cards)
                                            * 86_400e6).astype("timedelta64[us]"), end)

    # Transactions: Poisson count per card over its active span, uniform in time.
    active_from = np.maximum(issued_at, start)
    active_to = np.minimum(retired_at, end)
    active_days = np.maximum((active_to - active_from).astype(np.int64), 0) / 86_400e6  # µs → days
    counts = rng.poisson(card_rate * active_days)
    card_idx = np.repeat(np.arange(n_cards), counts)
    n = int(card_idx.size)
    offsets_us = (rng.random(n) * (active_days[card_idx] * 86_400e6)).astype("timedelta64[us]")
    ts = active_from[card_idx] + offsets_us
    drifted = (
        np.zeros(n, dtype=bool)
        if config.drift_day is None
        else ts >= start + np.timedelta64(config.drift_day, "D")
    )
    merchant_idx = rng.choice(n_merchants, n, p=popularity)
    cat = category_idx[merchant_idx]
    amount_z = rng.normal(0.0, 1.0, n)
    if config.disparity:
        amount_z = np.where(disparate[card_idx], amount_z * (1.0 + config.disparity), amount_z)
    amount = np.exp(card_mu[card_idx] + 0.55 * amount_z) * CATEGORY_AMOUNT[cat]
    amount = np.where(drifted, amount * 1.5, amount)
    amount = np.maximum(np.round(amount, 2), 0.5)
    online_share = np.where(np.isin(CATEGORIES[cat], ["electronics", "online_services"]), 0.7, 0.2)
    online_share = np.where(drifted, online_share + 0.2, online_share)
    if config.disparity:
        online_share = np.where(disparate[card_idx],
                                np.minimum(online_share + 0.3 * config.disparity, 0.9),
                                online_share)
    u = rng.random(n)
    channel_idx = np.where(u < online_share, 1, np.where(u < online_share + 0.05, 2, 0))
    hour = ((ts - ts.astype("datetime64[D]")) / np.timedelta64(1, "h")).astype(np.int64)

    # Yesterday's activity of the card (day boundaries at UTC midnight).
    day0 = start.astype("datetime64[D]")
    day_idx = ((ts.astype("datetime64[D]") - day0) / DAY).astype(np.int64)
    n_days = int(day_idx.max()) + 2 if n else 1
    daily = np.bincount(card_idx * n_days + day_idx, minlength=n_cards * n_days)
    prev_day = np.where(day_idx > 0, daily[card_idx * n_days + np.maximum(day_idx - 1, 0)], 0)

    drift_bonus = np.where(drifted & np.isin(CATEGORIES[cat], list(config.drift_categories)),
                           config.drift_bonus, 0.0)
    logit = fraud_logit(
        amount_z=amount_z,
        online=(channel_idx == 1).astype(float),
        night=(hour < 6).astype(float),
        merchant_risk=merchant_risk[merchant_idx],
        prev_day_count=prev_day,
        drift_bonus=drift_bonus,
    )
    probability = 1.0 / (1.0 + np.exp(-logit))
    is_fraud = rng.random(n) < probability

    # Labels arrive late: chargebacks after days, settlements after a few days.
    delay_days = np.where(
        is_fraud,
        0.25 + np.minimum(rng.exponential(4.0, n), 60.0),
        rng.uniform(2.0, 6.0, n),
    )
    label_ts = ts + (delay_days * 86_400e6).astype("timedelta64[us]")

    order = np.argsort(ts, kind="stable")
    ids = np.arange(n, dtype=np.int64) + 1

    def utc(values: np.ndarray) -> pd.Series:
        return pd.Series(values.astype("datetime64[us]")).dt.tz_localize("UTC")

    transactions = pd.DataFrame(
        {
            "transaction_id": ids,
            "event_timestamp": utc(ts[order]),
            "card_id": cards["card_id"].to_numpy()[card_idx[order]],
            "merchant_id": merchants["merchant_id"].to_numpy()[merchant_idx[order]],
            "amount": amount[order],
            "channel": CHANNELS[channel_idx[order]],
            "local_hour": hour[order],
            "age_band": AGE_BANDS[age_idx[card_idx[order]]],
        }
    )
    labels = pd.DataFrame(
        {
            "transaction_id": ids,
            "label_timestamp": utc(label_ts[order]),
            "is_fraud": is_fraud[order].astype(np.int64),
        }
    )
    truth = pd.DataFrame({"transaction_id": ids, "fraud_probability": probability[order]})
    cards["issued_at"] = utc(issued_at)

    holdout_from = end - np.timedelta64(int(config.holdout_days * 86_400e6), "us")
    in_holdout = (ts[order] >= holdout_from) & (label_ts[order] <= end)
    y_hold = is_fraud[order][in_holdout]
    bayes_auc = (
        float(roc_auc_score(y_hold, probability[order][in_holdout]))
        if 0 < y_hold.sum() < y_hold.size
        else None
    )
    meta = {
        "config": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(config).items()},
        "start": pd.Timestamp(start, tz="UTC").isoformat(),
        "end": pd.Timestamp(end, tz="UTC").isoformat(),
        "drift_from": None
        if config.drift_day is None
        else pd.Timestamp(start + np.timedelta64(config.drift_day, "D"), tz="UTC").isoformat(),
        "cards": n_cards,
        "merchants": n_merchants,
        "transactions": n,
        "fraud_rate": float(is_fraud.mean()) if n else 0.0,
        "holdout": {
            "from": pd.Timestamp(holdout_from, tz="UTC").isoformat(),
            "to": pd.Timestamp(end, tz="UTC").isoformat(),
            "labelled_events": int(in_holdout.sum()),
            "frauds": int(y_hold.sum()),
            "bayes_auc": bayes_auc,
        },
    }
    return GeneratedData(cards, merchants, transactions, labels, truth, meta)


def write_generated(data: GeneratedData, raw_dir: Path) -> dict[str, Path]:
    """Write every table as parquet (microsecond UTC timestamps) plus meta.json."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name in ("cards", "merchants", "transactions", "labels", "truth"):
        path = raw_dir / f"{name}.parquet"
        table = pa.Table.from_pandas(getattr(data, name), preserve_index=False)
        pq.write_table(table, path, row_group_size=1_000_000)
        paths[name] = path
    meta_path = raw_dir / "meta.json"
    meta_path.write_text(json.dumps(data.meta, indent=2) + "\n")
    paths["meta"] = meta_path
    return paths


def scaled_cards(scale: float) -> int:
    """Cards for a scale factor: 1 is the demo (2,000); 34.8 (69,600 cards) gives 10M transactions."""
    return max(1, int(round(DEFAULT_CARDS * scale)))
