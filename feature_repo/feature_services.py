"""Feature services: one per model version, each logging what it serves in Feast's schema."""

from pathlib import Path

from feast import FeatureService
from feast.feature_logging import LoggingConfig
from feast.infra.offline_stores.file_source import FileLoggingDestination
from features import card_activity_fv, card_profile_fv, merchant_stats_fv
from on_demand import transaction_features

LOG_DIR = Path(__file__).resolve().parent / "data" / "feature_logs"

fraud_model_v1 = FeatureService(
    name="fraud_model_v1",
    features=[card_activity_fv, card_profile_fv, merchant_stats_fv, transaction_features],
    description="Inputs of the card-fraud model, version 1.",
    owner="risk-ml@skewless.example",
    tags={"model": "fraud", "team": "risk"},
    logging_config=LoggingConfig(
        destination=FileLoggingDestination(path=str(LOG_DIR / "fraud_model_v1")),
    ),
)
