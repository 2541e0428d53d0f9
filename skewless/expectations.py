"""Expectations: what a feature view's table (and a request source's events) must look like
before it goes online or into a training set.

A view names its expectations with the Feast tag ``expectations`` — ``module.attribute`` of a
module in the feature repo (the demo's ``expectations.py``, listed in ``.feastignore`` so
`feast apply` does not import it): a ``pandera.polars.DataFrameSchema`` named after the view.
pandera checks what it knows — each column's type, nullability, ranges and allowed values
(``Check``), uniqueness of the key (``unique=[entity, event timestamp, created timestamp]``);
three rules pandera has no words for are read from the schema's metadata:

- a column's ``metadata={"max_null_rate": 0.1}``: at most that share of nulls (or NaN); the
  column is then ``nullable=True`` for pandera;
- the schema's ``metadata={"max_age": "2d"}``: the newest event time is no older than that
  before the step's reference time (``materialize``: its ``--end``; ``dataset``: the newest
  label event up to the cutoff; ``validate``: ``--as-of``, default now);
- the schema's ``metadata={"volume_tolerance": 0.5}``: the row count is within ±50% of the
  previous run's that passed (or was accepted).

pandera validates through its polars back end: the parquet is scanned lazily, every check is
run (``lazy=True``) and each failure comes back as the offending value and row, which the
report turns into a count and a few examples per feature and rule. A request source's
expectations are checked on the label events table (the request fields as they arrived).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from skewless.errors import InvalidInput
from skewless.freshness import duration_seconds

if TYPE_CHECKING:
    from skewless.definitions import RegistrySnapshot
    from skewless.settings import Settings

EXPECTATIONS_TAG = "expectations"
MAX_NULL_RATE = "max_null_rate"  # a column's metadata
MAX_AGE = "max_age"  # the schema's metadata
VOLUME_TOLERANCE = "volume_tolerance"  # the schema's metadata
EXAMPLES = 5  # offending values a finding keeps
EXAMPLE_CHARS = 200
FEATURE_VIEW = "feature view"
REQUEST_SOURCE = "request source"

# pandera's names for its built-in checks, as the report calls the rule.
_RULES = {"column_in_dataframe": "present", "not_nullable": "not_null",
          "multiple_fields_uniqueness": "unique", "field_uniqueness": "unique",
          "column_in_schema": "unexpected_column"}


class ExpectationsError(InvalidInput):
    """Expectations that cannot be read or run (the message names the view and the tag)."""


@dataclass(frozen=True)
class Finding:
    """One rule broken on one feature (or the table): how many rows, a few examples."""

    feature: str
    rule: str
    count: int
    examples: tuple[str, ...] = ()

    def describe(self) -> str:
        shown = f": {', '.join(self.examples)}" if self.examples else ""
        return f"{self.feature} {self.rule} — {self.count:,} offending{shown}"

    def to_json(self) -> dict[str, Any]:
        return {"feature": self.feature, "rule": self.rule, "count": self.count,
                "examples": list(self.examples)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Finding:
        return cls(str(doc["feature"]), str(doc["rule"]), int(doc["count"]),
                   tuple(str(e) for e in doc.get("examples", ())))


@dataclass(frozen=True)
class Target:
    """A table with expectations: a feature view's source, or a request source's events."""

    name: str
    kind: str
    reference: str  # the tag's value, module.attribute
    path: Path
    timestamp_column: str | None = None


@dataclass(frozen=True)
class TargetResult:
    """What one table's validation found."""

    target: str
    kind: str
    schema: str
    location: str
    rows: int | None
    newest_event: datetime | None
    findings: tuple[Finding, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "kind": self.kind, "schema": self.schema,
                "location": self.location, "rows": self.rows,
                "newest_event": self.newest_event.isoformat() if self.newest_event else None,
                "passed": self.passed, "findings": [f.to_json() for f in self.findings],
                "seconds": round(self.seconds, 3)}


@dataclass
class ValidationReport:
    """Every target of one step's validation, and what was not checked."""

    step: str
    reference_time: datetime
    results: list[TargetResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[TargetResult]:
        return [r for r in self.results if not r.passed]

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "reference_time": self.reference_time.isoformat(),
                "passed": self.passed, "results": [r.to_json() for r in self.results],
                "notes": self.notes}


# Which tables, and their schemas -----------------------------------------------------------

def targets(settings: Settings, snapshot: RegistrySnapshot,
            views: Iterable[str] | None = None) -> tuple[list[Target], list[str]]:
    """The tables with expectations among ``views`` (feature views and request sources by
    name; None: all of the project's), and a note for each one that has none or cannot be
    read here."""
    from skewless.feast_cli import source_file

    wanted = None if views is None else set(views)
    repo = settings.repo_path.absolute()
    found: list[Target] = []
    notes: list[str] = []
    known: set[str] = set()
    for view in snapshot.feature_views():
        known.add(view.name)
        if wanted is not None and view.name not in wanted:
            continue
        reference = (view.tags or {}).get(EXPECTATIONS_TAG)
        source: Any = view.batch_source
        if reference is None:
            notes.append(f"{FEATURE_VIEW} {view.name}: no {EXPECTATIONS_TAG} tag, not checked")
        elif (location := source_file(source, repo)) is None:
            notes.append(f"{FEATURE_VIEW} {view.name}: its source is a "
                         f"{type(source).__name__}, not a parquet file; not checked")
        else:
            if "://" in location and not location.startswith("file://"):
                notes.append(f"{FEATURE_VIEW} {view.name}: {location} is remote; not checked")
                continue
            found.append(Target(view.name, FEATURE_VIEW, reference,
                                Path(location.removeprefix("file://")),
                                source.timestamp_field or None))
    seen: set[str] = set()
    for definition in snapshot.on_demand_views():
        for source in getattr(definition.view, "source_request_sources", {}).values():
            if source.name in seen:
                continue
            seen.add(source.name)
            known.add(source.name)
            if wanted is not None and source.name not in wanted:
                continue
            reference = (source.tags or {}).get(EXPECTATIONS_TAG)
            if reference is None:
                notes.append(f"{REQUEST_SOURCE} {source.name}: no {EXPECTATIONS_TAG} tag, not "
                             "checked")
                continue
            found.append(Target(source.name, REQUEST_SOURCE, reference,
                                settings.resolved_events_path, settings.event_timestamp_column))
    unknown = sorted((wanted or set()) - known)
    if unknown:
        raise ExpectationsError(f"no feature view or request source named {', '.join(unknown)} "
                                f"in project {snapshot.project} (known: "
                                f"{', '.join(sorted(known)) or 'none'})")
    return found, notes


def service_views(snapshot: RegistrySnapshot, service: str) -> set[str]:
    """The feature views and request sources a feature service reads (through its on-demand
    views too): what its training set is built from."""
    names: set[str] = set()
    on_demand = snapshot.on_demand_names
    for projection in snapshot.feature_service(service).feature_view_projections:
        if projection.name not in on_demand:
            names.add(projection.name)
            continue
        view = snapshot.on_demand(projection.name).view
        names.update(p.name for p in view.source_feature_view_projections.values())
        names.update(view.source_request_sources)
    return names


def load_schema(repo: Path, target: Target, modules: dict[str, ModuleType]) -> Any:
    """The pandera schema ``target.reference`` names, from the repo's module of that name."""
    import pandera.polars as pa

    where = f"{target.kind} {target.name}: {EXPECTATIONS_TAG}={target.reference!r}"
    module_name, _, attribute = target.reference.rpartition(".")
    if not module_name or not attribute:
        raise ExpectationsError(f"{where} is not module.attribute (e.g. "
                                f"expectations.{target.name})")
    if module_name not in modules:
        path = repo.joinpath(*module_name.split(".")).with_suffix(".py")
        if not path.is_file():
            raise ExpectationsError(f"{where}: {path} does not exist")
        # A private module name: the repo's `expectations` must not shadow anything, nor be
        # found by a later import of another repo's.
        spec = importlib.util.spec_from_file_location(f"_skewless_repo_{module_name}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(repo))  # as Feast's CLI does, so the module's imports resolve
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ExpectationsError(f"{where}: importing {path} failed: "
                                    f"{type(exc).__name__}: {exc}") from exc
        finally:
            sys.path.remove(str(repo))
        modules[module_name] = module
    schema = getattr(modules[module_name], attribute, None)
    if not isinstance(schema, pa.DataFrameSchema):
        raise ExpectationsError(f"{where}: {attribute} is "
                                f"{'missing' if schema is None else type(schema).__name__}, "
                                "not a pandera.polars DataFrameSchema")
    return schema


# Running them -------------------------------------------------------------------------------

def validate(settings: Settings, found: list[Target], step: str, reference_time: datetime,
             previous_rows: Callable[[str], int | None] = lambda name: None,
             notes: list[str] | None = None) -> ValidationReport:
    """Run the expectations of ``found`` (from :func:`targets`) against their tables now."""
    report = ValidationReport(step, reference_time, notes=list(notes or []))
    modules: dict[str, ModuleType] = {}
    repo = settings.repo_path.absolute()
    for target in found:
        schema = load_schema(repo, target, modules)
        report.results.append(validate_table(target, schema, reference_time,
                                             previous_rows(target.name)))
    return report


def validate_table(target: Target, schema: Any, reference_time: datetime,
                   previous_rows: int | None) -> TargetResult:
    """One table against its schema, and the rules of its metadata."""
    import pandera.polars as pa
    import polars as pl
    from pandera.config import ValidationDepth, config_context

    started = time.perf_counter()
    if not target.path.exists():
        return TargetResult(target.name, target.kind, target.reference, str(target.path), None,
                            None, (Finding("(table)", "present", 0,
                                           (f"{target.path} does not exist",)),),
                            time.perf_counter() - started)
    frame = pl.scan_parquet(_parquet_glob(target.path))
    columns = frame.collect_schema()
    rows, newest, nulls = _table_facts(frame, columns, schema, target.timestamp_column)
    findings: list[Finding] = []
    try:
        # Polars frames are lazy: pandera checks only their schema unless told to read data.
        with config_context(validation_depth=ValidationDepth.SCHEMA_AND_DATA):
            schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        findings += _pandera_findings(exc.failure_cases, schema, rows)
    except Exception as exc:  # a check that cannot run on this column's type, say
        findings.append(Finding("(table)", "error", rows,
                                (f"{type(exc).__name__}: {exc}"[:EXAMPLE_CHARS],)))
    findings += _metadata_findings(schema, rows, newest, nulls, reference_time, previous_rows,
                                   target.timestamp_column)
    return TargetResult(target.name, target.kind, target.reference, str(target.path), rows,
                        newest, tuple(findings), time.perf_counter() - started)


def _parquet_glob(path: Path) -> str:
    """A file, or every parquet file under a directory (a partitioned source)."""
    return str(path / "**" / "*.parquet") if path.is_dir() else str(path)


def _table_facts(frame: Any, columns: Any, schema: Any,
                 timestamp: str | None) -> tuple[int, datetime | None, dict[str, int]]:
    """Rows, the newest event time and the nulls of each column with a maximum null rate,
    in one pass."""
    import polars as pl

    exprs = [pl.len().alias("rows")]
    has_time = timestamp is not None and isinstance(columns.get(timestamp), pl.Datetime)
    if timestamp is not None and has_time:
        exprs.append(pl.col(timestamp).max().alias("newest"))
    rated = [name for name, column in schema.columns.items()
             if (column.metadata or {}).get(MAX_NULL_RATE) is not None and name in columns]
    for name in rated:
        missing = pl.col(name).is_null()
        if columns[name].is_float():
            missing = missing | pl.col(name).is_nan()
        exprs.append(missing.sum().alias(f"nulls:{name}"))
    facts = frame.select(exprs).collect().row(0, named=True)
    newest = facts.get("newest")
    if isinstance(newest, datetime) and newest.tzinfo is None:
        newest = newest.replace(tzinfo=UTC)
    return (int(facts["rows"]), newest if has_time else None,
            {name: int(facts[f"nulls:{name}"]) for name in rated})


def _pandera_findings(cases: Any, schema: Any, rows: int) -> list[Finding]:
    """pandera's failure cases (one per offending value or schema problem) as findings."""
    findings = []
    for (column, check), group in cases.group_by(["column", "check"], maintain_order=True):
        check = str(check)
        # A check's name with its arguments (``in_range(0, 23)``), but not the list of allowed
        # categories: the schema holds it, the examples show what was found instead.
        rule = ("type" if check.startswith("dtype(") else "isin" if check.startswith("isin(")
                else _RULES.get(check, check))
        values = [str(v) for v in group["failure_case"].to_list() if v is not None]
        examples = tuple(dict.fromkeys(v[:EXAMPLE_CHARS] for v in values))[:EXAMPLES]
        if rule == "present":  # the schema's name in `column`; the missing column is the case
            findings += [Finding(v, rule, rows, ("column missing",)) for v in values]
        elif rule == "type":  # the whole column is of another type
            findings.append(Finding(str(column), rule, rows,
                                    tuple(f"found {v}" for v in examples)))
        elif rule == "unique":
            findings.append(Finding(", ".join(schema.unique or []) or str(column), rule,
                                    len(group), examples))
        else:
            findings.append(Finding(str(column), rule, len(group), examples))
    return findings


def _metadata_findings(schema: Any, rows: int, newest: datetime | None,
                       nulls: dict[str, int], reference_time: datetime,
                       previous_rows: int | None, timestamp: str | None) -> list[Finding]:
    """The rules pandera has no words for: null rates, freshness, volume."""
    findings = []
    for name, count in nulls.items():
        limit = float(schema.columns[name].metadata[MAX_NULL_RATE])
        if rows and count / rows > limit:
            findings.append(Finding(name, MAX_NULL_RATE, count, (
                f"{count / rows:.2%} null, at most {limit:.2%}",)))
    meta = schema.metadata or {}
    if meta.get(MAX_AGE) is not None:
        limit_s = duration_seconds(str(meta[MAX_AGE]))
        if limit_s is None:
            raise ExpectationsError(f"schema {schema.name}: {MAX_AGE}={meta[MAX_AGE]!r} is not a "
                                    "positive duration such as 26h, 90m or 2d")
        oldest_allowed = reference_time - timedelta(seconds=limit_s)
        if newest is None or newest < oldest_allowed:
            seen = (f"newest event {newest.isoformat()}" if newest else
                    "no rows" if rows == 0 else f"no event times in {timestamp}")
            findings.append(Finding(timestamp or "(table)", "freshness", rows, (
                f"{seen}; at most {meta[MAX_AGE]} before {reference_time.isoformat()}",)))
    tolerance = meta.get(VOLUME_TOLERANCE)
    if tolerance is not None and previous_rows:
        change = rows / previous_rows - 1
        if abs(change) > float(tolerance):
            findings.append(Finding("(table)", "volume", abs(rows - previous_rows), (
                f"{rows:,} rows, {change:+.1%} on the previous run's {previous_rows:,} "
                f"(tolerance ±{float(tolerance):.0%})",)))
    return findings


# What /predict enforces -----------------------------------------------------------------------

# pandera checks that translate to a request field's bounds: check name → pydantic constraint.
_BOUNDS = {"greater_than_or_equal_to": ("ge", "min_value"), "greater_than": ("gt", "min_value"),
           "less_than_or_equal_to": ("le", "max_value"), "less_than": ("lt", "max_value")}


@dataclass(frozen=True)
class FieldLimits:
    """A request field's bounds and allowed values from its request source's expectations."""

    reference: str  # the schema, module.attribute
    bounds: dict[str, Any] = field(default_factory=dict)  # ge, gt, le, lt (numbers)
    allowed: tuple[Any, ...] | None = None

    @classmethod
    def of(cls, reference: str, column: Any) -> FieldLimits:
        """The checks of a pandera column that bound a value: ranges and allowed values
        (others — patterns, custom checks — are checked on the events table only)."""
        bounds: dict[str, Any] = {}
        allowed: tuple[Any, ...] | None = None
        for check in column.checks:
            stats = check.statistics or {}
            if check.name in _BOUNDS:
                key, stat = _BOUNDS[check.name]
                bounds[key] = stats[stat]
            elif check.name == "in_range":
                bounds["ge" if stats.get("include_min", True) else "gt"] = stats["min_value"]
                bounds["le" if stats.get("include_max", True) else "lt"] = stats["max_value"]
            elif check.name == "isin":
                allowed = tuple(stats["allowed_values"])
            elif check.name == "equal_to":
                allowed = (stats["value"],)
        return cls(reference, bounds, allowed)


def request_limits(repo: Path, request_sources: Iterable[Any],
                   fields: Iterable[str]) -> dict[str, FieldLimits]:
    """Bounds and allowed values of ``fields`` from the expectations of the request sources
    that carry the tag (the same schemas `skewless validate` checks the label events with)."""
    wanted = set(fields)
    modules: dict[str, ModuleType] = {}
    limits: dict[str, FieldLimits] = {}
    for source in request_sources:
        reference = (source.tags or {}).get(EXPECTATIONS_TAG)
        if reference is None:
            continue
        target = Target(source.name, REQUEST_SOURCE, reference, Path())
        schema = load_schema(repo, target, modules)
        for name, column in schema.columns.items():
            if name in wanted:
                limits[name] = FieldLimits.of(reference, column)
    return limits
