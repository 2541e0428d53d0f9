"""POST /predict and /predict/batch: request models derived from the feature service.

Every field is bounded by its Feast type, so whatever is accepted can be read from Redis,
scored and logged in Feast's schema: integers within Int32/Int64, Float32 within its range,
floats finite, strings valid UTF-8 (pydantic refuses a lone surrogate) and at most
``SKEWLESS_MAX_STRING_LENGTH`` characters; a request field also within the range, or among the
categories, of its request source's expectations (feature_repo/expectations.py). Anything else
is a 422 naming the field.
"""


import json
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictInt, create_model

from service.auth import require
from service.online import PYTHON_TYPES
from service.predictor import Prediction, Predictor, Timings
from skewless.contract import ServiceSpec
from skewless.expectations import FieldLimits
from skewless.settings import Settings
from skewless.tokens import Role

# What /predict answers besides 200 and 422, for OpenAPI.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Body that cannot be read as JSON text (not UTF-8)"},
    503: {"description": "Model, online store or log buffer unavailable, or every model worker "
                         "busy (with Retry-After)"},
    413: {"description": "Body too large"},
}

INT_LIMITS = {"Int32": 2**31, "Int64": 2**63}  # the range is [-limit, limit - 1]
FLOAT32_MAX = float(np.finfo(np.float32).max)
EVENT_ID_MAX_LENGTH = 256


def bounded_type(dtype: str, max_string_length: int, limits: FieldLimits | None = None) -> Any:
    """The Python type of a Feast type, with the bounds the type's storage has, narrowed by
    the field's expectations (``limits``: a range, allowed values) when it has them."""
    if limits is not None and limits.allowed is not None:
        return Literal[limits.allowed]  # strict: of the field's JSON type too
    if dtype in INT_LIMITS:
        limit = INT_LIMITS[dtype]
        return Annotated[int, Field(**_narrowed(-limit, limit - 1, limits))]
    if dtype == "Float32":
        return Annotated[float, Field(**_narrowed(-FLOAT32_MAX, FLOAT32_MAX, limits))]
    if dtype == "Float64" and limits is not None and limits.bounds:
        return Annotated[float, Field(**limits.bounds)]
    if dtype == "String":
        # pydantic refuses a lone surrogate itself (string_unicode): the text must be UTF-8.
        return Annotated[str, Field(max_length=max_string_length)]
    if dtype == "Bytes":
        return Annotated[bytes, Field(max_length=max_string_length)]
    return PYTHON_TYPES[dtype]


def _narrowed(low: float, high: float, limits: FieldLimits | None) -> dict[str, Any]:
    """The type's bounds [low, high], and the expectations' where they are tighter."""
    bounds: dict[str, Any] = dict(limits.bounds) if limits is not None else {}
    if max(bounds.get("ge", low), bounds.get("gt", low)) <= low:
        bounds.pop("gt", None)
        bounds["ge"] = low
    if min(bounds.get("le", high), bounds.get("lt", high)) >= high:
        bounds.pop("lt", None)
        bounds["le"] = high
    return bounds


EventId = (Annotated[StrictInt, Field(ge=-INT_LIMITS["Int64"], le=INT_LIMITS["Int64"] - 1)]
           | Annotated[str, Field(min_length=1, max_length=EVENT_ID_MAX_LENGTH)])


def request_models(spec: ServiceSpec, batch_max_rows: int, event_id: str | None = None,
                   max_string_length: int = 1024,
                   limits: dict[str, FieldLimits] | None = None,
                   ) -> tuple[type[BaseModel], type[BaseModel]]:
    """Pydantic models for one row and for a batch: the service's entity keys and request fields,
    and optionally ``event_id``, the client's id of the event being scored.

    Unknown fields are refused (a misspelt field must not be silently ignored), floats must be
    finite, and every value must fit its Feast type (:func:`bounded_type`) and the range or
    categories its request source's expectations give it (``limits``).
    """
    limits = limits or {}
    fields: dict[str, Any] = {}
    for key in spec.entity_keys:
        fields[key.name] = (bounded_type(key.dtype, max_string_length), Field(
            description=f"Entity key ({key.dtype}) of feature service {spec.feature_service}."))
    for req in spec.request_fields:
        found = limits.get(req.name)
        fields[req.name] = (bounded_type(req.dtype, max_string_length, found), Field(
            description=f"Request-time field ({req.dtype}) read by an on-demand feature view"
            + (f"; its range and categories are the expectations {found.reference}."
               if found else ".")))
    if event_id and event_id not in fields:
        fields[event_id] = (EventId | None, Field(
            None, description="Optional id of the scored event (integer or string). It is "
            "logged with the served features, so labels that arrive later can be joined by "
            "it (`skewless dataset --from-logs`)."))
    # Strict: a value is of its JSON type (no "5" for 5, no true for 1), as the schema says.
    config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, title="PredictRequest")
    row = create_model("PredictRequest", __config__=config, **fields)
    batch = create_model(
        "PredictBatchRequest", __config__=ConfigDict(extra="forbid"),
        rows=(list[row], Field(min_length=1, max_length=batch_max_rows,  # type: ignore[valid-type]
                               description=f"Up to {batch_max_rows} rows.")),
    )
    return row, batch


class FeatureValue(BaseModel):
    value: Any
    status: str = Field(description="PRESENT, NULL_VALUE, NOT_FOUND or OUTSIDE_MAX_AGE")


class BatchPrediction(BaseModel):
    """One row's answer inside a batch."""

    request_id: str
    model_version: str = Field(
        description="The model version that answered this row: production's, or the "
        "canary's for the entities in its share.")
    score: float = Field(description="Probability of the positive class.")
    decision: bool = Field(
        description="Whether to act on the event: the score is at or above the model's "
        "decision threshold (its cost-minimising one, else SKEWLESS_DECISION_THRESHOLD).")
    features: dict[str, FeatureValue] | None = Field(
        None, description="With include_features=true: each `<view>__<feature>` served.")
    contributions: dict[str, float] | None = Field(
        None, description="With explain=true: each feature's additive contribution to the "
        "log-odds (LightGBM pred_contrib), and the bias.")


class PredictResponse(BatchPrediction):
    pass


class PredictBatchResponse(BaseModel):
    model_version: str = Field(description="The production version (each row names the "
                               "version that answered it).")
    predictions: list[BatchPrediction]


def _payload(predictor: Predictor, p: Prediction, include_features: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"request_id": p.request_id, "model_version": p.model_version,
                           "score": p.score, "decision": p.decision}
    if include_features:
        out["features"] = predictor.feature_payload(p)
    if p.contributions is not None:
        out["contributions"] = p.contributions
    return out


def _json(content: dict[str, Any], timings: Timings) -> Response:
    # Serialised directly: the payload is plain JSON types already, and FastAPI's response
    # validation would cost more than the model call.
    # Strict JSON: a NaN or infinity left in the payload is an error, not an invalid body.
    return Response(json.dumps(content, separators=(",", ":"), allow_nan=False),
                    media_type="application/json",
                    headers={"Server-Timing": timings.header()})


IncludeFeatures = Annotated[bool, Query(description="Return the feature vector and statuses.")]
Explain = Annotated[bool, Query(description="Return each feature's contribution to the score.")]


def build_router(spec: ServiceSpec, settings: Settings,
                 limits: dict[str, FieldLimits] | None = None) -> APIRouter:
    row_model, batch_model = request_models(spec, settings.batch_max_rows,
                                            settings.event_id_column, settings.max_string_length,
                                            limits)
    explain_max_rows = settings.explain_max_rows
    # SKEWLESS_PREDICT_AUTH: a client token per request (a hash and a dictionary read).
    router = APIRouter(tags=["predict"], dependencies=(
        [Depends(require(Role.CLIENT))] if settings.predict_auth else None))

    def predictor_of(request: Request) -> Predictor:
        return request.app.state.predictor  # type: ignore[no-any-return]

    async def run(request: Request, rows: list[dict[str, Any]],
                  explain: bool) -> tuple[list[Prediction], str, Timings]:
        if explain and len(rows) > explain_max_rows:  # TreeSHAP's cost grows with every row
            raise RequestValidationError([{
                "type": "too_long", "loc": ("query", "explain"),
                "msg": f"explain=true takes at most {explain_max_rows} rows "
                       f"(SKEWLESS_EXPLAIN_MAX_ROWS); this request has {len(rows)}"}])
        # ServiceUnavailable (503, naming the dependency) is answered by the app's handler.
        return await predictor_of(request).predict(rows, explain=explain)

    @router.post("/predict", response_model=PredictResponse,
                 responses=ERROR_RESPONSES)
    async def create_prediction(
        request: Request, body: row_model,  # type: ignore[valid-type]
        include_features: IncludeFeatures = False, explain: Explain = False,
    ) -> Response:
        """Score one event with the features Feast serves for its entities."""
        predictions, _, timings = await run(request, [body.__dict__], explain)  # type: ignore[attr-defined]
        return _json(_payload(predictor_of(request), predictions[0], include_features), timings)

    @router.post("/predict/batch", response_model=PredictBatchResponse,
                 responses=ERROR_RESPONSES)
    async def create_predictions(
        request: Request, body: batch_model,  # type: ignore[valid-type]
        include_features: IncludeFeatures = False, explain: Explain = False,
    ) -> Response:
        """Score up to the configured number of events with one Redis round trip."""
        rows = [r.__dict__ for r in body.rows]  # type: ignore[attr-defined]
        predictions, version, timings = await run(request, rows, explain)
        predictor = predictor_of(request)
        return _json({
            "model_version": version,
            "predictions": [_payload(predictor, p, include_features) for p in predictions],
        }, timings)

    return router
