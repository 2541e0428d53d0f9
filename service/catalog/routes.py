"""`/api/catalog/…` (JSON, in the OpenAPI schema) and `/catalog/…` (the same data as pages).

Handlers are plain functions: FastAPI runs them in its thread pool, so a metadata database
query never blocks the event loop that serves predictions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from pydantic import BaseModel

from service.catalog.catalog import (
    MAX_ID,
    Catalog,
    CatalogNotFound,
    CatalogUnavailable,
    age_text,
    param_text,
    since_text,
)
from service.catalog.charts import bar_chart, histogram_chart, rounds_chart, trials_chart
from service.catalog.schemas import (
    CatalogIndex,
    EntityDetail,
    ExperimentDetail,
    ExperimentIndex,
    FeatureDetail,
    JobsIndex,
    ModelDetail,
    ServiceDetail,
    ViewDetail,
)
from skewless.errors import SkewlessError

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
TEMPLATES.env.globals.update(age_text=age_text, since_text=since_text, param_text=param_text)
SVG = "image/svg+xml"


class NotFoundDetail(BaseModel):
    detail: str


class UnavailableDetail(BaseModel):
    detail: str


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": NotFoundDetail, "description": "Not found; detail names what"}}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": UnavailableDetail,
          "description": "The metadata database is unavailable; detail names it (retry later)"}}


def catalog_of(request: Request) -> Catalog:
    return request.app.state.catalog  # type: ignore[no-any-return]


CatalogDep = Annotated[Catalog, Depends(catalog_of)]
SearchText = Annotated[str, Query(max_length=200, description="words that must all appear in "
                                  "a name, description, tag or owner")]
TagFilter = Annotated[str | None, Query(max_length=200, description="key or key=value")]
OwnerFilter = Annotated[str | None, Query(max_length=200)]
EntityFilter = Annotated[str | None, Query(max_length=200)]
PrivacyFilter = Annotated[str | None, Query(
    pattern="^(none|pseudonymous|personal|unclassified)?$",
    description="features of this privacy class only (none, pseudonymous, personal, or "
    "unclassified); empty: any")]
ServiceFilter = Annotated[str | None, Query(max_length=200, description="a feature service's "
                                            "name: its experiments only")]
JobFilter = Annotated[str | None, Query(max_length=50, description="a job's name: its runs "
                                        "only")]
ExperimentId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="an experiment's id")]

api = APIRouter(prefix="/api/catalog", tags=["catalog"])
pages = APIRouter(prefix="/catalog", include_in_schema=False)


def _blank(value: str | None) -> str | None:
    return value or None


@api.get("", response_model=CatalogIndex)
def read_catalog(catalog: CatalogDep, q: SearchText = "", tag: TagFilter = None,
                 owner: OwnerFilter = None, entity: EntityFilter = None,
                 privacy: PrivacyFilter = None) -> CatalogIndex:
    """Entities, feature views, on-demand views, feature services and features; searched by
    ``q`` and filtered by tag, owner, entity and privacy class."""
    return catalog.index(q, _blank(tag), _blank(owner), _blank(entity), _blank(privacy))


@api.get("/features/{view}/{feature}", response_model=FeatureDetail, responses=NOT_FOUND)
def read_feature(view: str, feature: str, catalog: CatalogDep) -> FeatureDetail:
    """One feature: definition, freshness, statistics, lineage, serving health, snippet."""
    return catalog.feature(view, feature)


@api.get("/feature-views/{name}", response_model=ViewDetail, responses=NOT_FOUND)
def read_feature_view(name: str, catalog: CatalogDep) -> ViewDetail:
    """A feature view (batch or on-demand) and its features."""
    return catalog.view(name)


@api.get("/entities/{name}", response_model=EntityDetail, responses=NOT_FOUND)
def read_entity(name: str, catalog: CatalogDep) -> EntityDetail:
    """An entity, the views keyed on it and their features."""
    return catalog.entity(name)


@api.get("/feature-services/{name}", response_model=ServiceDetail, responses=NOT_FOUND)
def read_feature_service(name: str, catalog: CatalogDep) -> ServiceDetail:
    """A feature service, its features and the model versions trained on it."""
    return catalog.service(name)


@api.get("/models/{name}/versions/{version}", response_model=ModelDetail, responses=NOT_FOUND)
def read_model_version(name: str, version: str, catalog: CatalogDep) -> ModelDetail:
    """A registered model version: its features and their global importance (gain)."""
    return catalog.model(name, version)


@api.get("/experiments", response_model=ExperimentIndex, responses=UNAVAILABLE)
def read_experiments(catalog: CatalogDep,
                     feature_service: ServiceFilter = None) -> ExperimentIndex:
    """Hyperparameter searches (`skewless experiment`), newest first: runs by state, the best
    run and the model version registered from it."""
    return catalog.experiments(_blank(feature_service))


@api.get("/experiments/{experiment_id}", response_model=ExperimentDetail,
         responses={**NOT_FOUND, **UNAVAILABLE})
def read_experiment(experiment_id: ExperimentId, catalog: CatalogDep) -> ExperimentDetail:
    """One search: its data set, code and settings, every run with its parameters and metric
    per round, Optuna's parameter importances, the registered model's holdout metrics."""
    return catalog.experiment(experiment_id)


@api.get("/jobs", response_model=JobsIndex, responses=UNAVAILABLE)
def read_jobs(catalog: CatalogDep, job: JobFilter = None) -> JobsIndex:
    """The loop's jobs (`skewless worker`): each one's schedule, next slot, last success and
    last run, and the latest runs recorded by any worker (of ``job``)."""
    return catalog.jobs(_blank(job))


# Pages ---------------------------------------------------------------------------------------


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, template,
                                      {"now": datetime.now(UTC), **context})


@pages.get("", response_class=HTMLResponse)
def show_catalog(request: Request, catalog: CatalogDep, q: SearchText = "", tag: TagFilter = None,
                 owner: OwnerFilter = None, entity: EntityFilter = None,
                 privacy: PrivacyFilter = None) -> HTMLResponse:
    index = catalog.index(q, _blank(tag), _blank(owner), _blank(entity), _blank(privacy))
    return _page(request, "index.html", index=index, title="Feature catalog")


@pages.get("/features/{view}/{feature}", response_class=HTMLResponse)
def show_feature(view: str, feature: str, request: Request, catalog: CatalogDep) -> HTMLResponse:
    detail = catalog.feature(view, feature)
    return _page(request, "feature.html", d=detail, title=detail.feature.ref)


@pages.get("/features/{view}/{feature}/histogram.svg")
def show_histogram(view: str, feature: str, catalog: CatalogDep) -> Response:
    detail = catalog.feature(view, feature)
    stats = detail.statistics
    if stats is None or (stats.histogram is None and not stats.top_values):
        raise CatalogNotFound(f"no histogram of {detail.feature.ref} yet: run "
                              "`skewless catalog refresh`")
    return Response(histogram_chart(stats, detail.feature.ref), media_type=SVG)


@pages.get("/feature-views/{name}", response_class=HTMLResponse)
def show_feature_view(name: str, request: Request, catalog: CatalogDep) -> HTMLResponse:
    detail = catalog.view(name)
    return _page(request, "view.html", d=detail, title=name)


@pages.get("/entities/{name}", response_class=HTMLResponse)
def show_entity(name: str, request: Request, catalog: CatalogDep) -> HTMLResponse:
    detail = catalog.entity(name)
    return _page(request, "entity.html", d=detail, title=name)


@pages.get("/feature-services/{name}", response_class=HTMLResponse)
def show_feature_service(name: str, request: Request, catalog: CatalogDep) -> HTMLResponse:
    detail = catalog.service(name)
    return _page(request, "service.html", d=detail, title=name)


@pages.get("/models/{name}/versions/{version}", response_class=HTMLResponse)
def show_model_version(name: str, version: str, request: Request,
                       catalog: CatalogDep) -> HTMLResponse:
    detail = catalog.model(name, version)
    return _page(request, "model.html", d=detail, title=f"{name} {version}")


@pages.get("/models/{name}/versions/{version}/importance.svg")
def show_importance(name: str, version: str, catalog: CatalogDep) -> Response:
    detail = catalog.model(name, version)
    if not detail.importance:
        raise CatalogNotFound(f"no importance for model {name!r} version {version!r}: "
                              + detail.not_computed.get("importance", "none recorded"))
    bars = [(i.ref or i.feature, i.gain) for i in detail.importance]
    return Response(bar_chart(bars, f"Gain importance of {name} {version}", "gain"),
                    media_type=SVG)


@pages.get("/experiments", response_class=HTMLResponse)
def show_experiments(request: Request, catalog: CatalogDep,
                     feature_service: ServiceFilter = None) -> HTMLResponse:
    index = catalog.experiments(_blank(feature_service))
    return _page(request, "experiments.html", d=index, title="Experiments")


@pages.get("/jobs", response_class=HTMLResponse)
def show_jobs(request: Request, catalog: CatalogDep, job: JobFilter = None) -> HTMLResponse:
    index = catalog.jobs(_blank(job))
    return _page(request, "jobs.html", d=index, title="Jobs")


def _experiment_id(text: str) -> int:
    """A page's id: anything but a stored id's digits names no experiment (404, not 422)."""
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(MAX_ID))):
        raise CatalogNotFound(f"no experiment {text!r}")
    return int(text)  # out of range: the catalog's 404


def _inline(svg: str) -> Markup:
    """A chart in the page itself (one query, nothing fetched); its template escaped every
    text it holds."""
    return Markup(svg)


@pages.get("/experiments/{experiment_id}", response_class=HTMLResponse)
def show_experiment(experiment_id: str, request: Request, catalog: CatalogDep) -> HTMLResponse:
    d = catalog.experiment(_experiment_id(experiment_id))
    e = d.experiment
    # The per-round values are LightGBM's name of the metric (auc for roc_auc).
    lightgbm = str((d.search.get("metric") or {}).get("lightgbm")
                   or next((k for r in d.runs for k in r.steps), e.metric))
    trials = rounds = importance = None
    if d.runs:
        trials = _inline(trials_chart(d.runs, e.metric, f"Validation {e.metric} per trial"))
    if any(r.steps.get(lightgbm) for r in d.runs):
        rounds = _inline(rounds_chart(d.runs, lightgbm,
                                      f"Validation {lightgbm} per boosting round, each run"))
    if d.importances:
        importance = _inline(bar_chart(
            [(i.parameter, i.importance) for i in d.importances],
            "Parameter importances (Optuna, fANOVA)", "importance"))
    return _page(request, "experiment.html", d=d, title=f"Experiment {e.id}: {e.name}",
                 trials_svg=trials, rounds_svg=rounds, importance_svg=importance,
                 lightgbm_metric=lightgbm)


async def catalog_error(request: Request, exc: Exception) -> Response:
    """404 naming what was not found, 503 naming the database: JSON under /api, a page
    elsewhere."""
    assert isinstance(exc, SkewlessError) and exc.status_code is not None
    status, headers = exc.status_code, exc.headers()
    if request.url.path.startswith("/catalog") and not request.url.path.endswith(".svg"):
        return TEMPLATES.TemplateResponse(request, "error.html", {
            "title": "Not found" if status == 404 else "Unavailable", "detail": str(exc),
            "now": datetime.now(UTC)}, status_code=status, headers=headers)
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


def install_catalog(app: Any, catalog: Catalog, auth: bool = False) -> None:
    """Mount the catalog's API and pages on ``app``; with ``auth``, for viewer tokens (or
    higher) only (``SKEWLESS_CATALOG_AUTH``)."""
    from service.auth import require
    from skewless.tokens import Role

    app.state.catalog = catalog
    needs = [Depends(require(Role.VIEWER))] if auth else None
    app.include_router(api, dependencies=needs)
    app.include_router(pages, dependencies=needs)
    app.add_exception_handler(CatalogNotFound, catalog_error)
    app.add_exception_handler(CatalogUnavailable, catalog_error)
