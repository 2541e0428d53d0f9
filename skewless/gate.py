"""The acceptance gate's vocabulary, shared by the side that decides and the side that asks.

A promotion passes the gate when every criterion holds: a first version's holdout metric above
an absolute floor; the candidate beating its best baseline by a margin; its metric at least
production's minus a margin on one point-in-time holdout; on every slice with enough labels, the
paired difference with production not confidently worse; no group disparity confidently beyond
a ratio. Each criterion is a :class:`Criterion` with its setting, verdict and evidence, stored
with the transition. Deciding needs the training side (a holdout built through Feast, the models
scored on it): that is ``training.evaluation.gate``. Asking needs only what is here — the
decision with its evidence, the refusal, and the signature of the function that promotes — so
the service takes a promoter from whoever builds it and never imports training/.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from skewless.registry import RegistryError

if TYPE_CHECKING:
    from skewless.registry import ModelVersion, Registry
    from skewless.settings import Settings


PASS, WARN, FAIL, SKIPPED = "pass", "warn", "fail", "skipped"


@dataclass
class Criterion:
    """One of the gate's checks: what it compares, under which setting, and its verdict.

    ``fail`` refuses the candidate; ``warn`` is recorded and shown but lets it through;
    ``skipped`` says why it could not be judged (no production, a slice too small)."""

    name: str
    setting: str
    status: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class GateDecision:
    """The gate's verdict on one candidate, with the evidence stored beside the transition."""

    accepted: bool
    metric: str
    margin: float
    candidate: dict[str, Any]
    production: dict[str, Any] | None
    holdout: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    criteria: list[Criterion] = field(default_factory=list)

    def judge(self) -> GateDecision:
        """Accepted exactly when no criterion failed."""
        self.accepted = not self.failed()
        return self

    def failed(self) -> list[Criterion]:
        return [c for c in self.criteria if c.status == FAIL]

    def warnings(self) -> list[Criterion]:
        return [c for c in self.criteria if c.status == WARN]

    def evidence(self) -> dict[str, Any]:
        return {"gate": asdict(self)}

    def explain(self) -> str:
        """The failing criteria, each by name and setting (or the verdict's basis when none
        failed), then the warnings."""
        failed = self.failed()
        parts = ([f"{c.name} ({c.setting}): {c.message}" for c in failed] if failed else
                 [self.note] if self.note else [])
        c = self.candidate
        if not failed and self.production and self.production.get("score") is not None:
            p, window = self.production, self.holdout
            parts.append(f"candidate {c['version']} {self.metric} {c['score']:.4f} vs production "
                         f"{p['version']} {p['score']:.4f} (margin {self.margin:g}) on the "
                         f"holdout {window['from']} to {window['to']}: {window['rows']:,} "
                         f"events, {window['positives']:,} positives")
        parts += [f"warning: {w.name}: {w.message}" for w in self.warnings()]
        return "; ".join(p for p in parts if p)


class PromotionRefused(RegistryError):
    """The gate (or the artefact's checks) refused the candidate; ``decision`` says why."""

    status_code = 409

    def __init__(self, message: str, decision: GateDecision | None = None) -> None:
        super().__init__(message)
        self.decision = decision

    def detail(self) -> Any:
        return {"message": str(self), **(self.decision.evidence() if self.decision else {})}


class Promoter(Protocol):
    """Promote a version through the gate (or past it with ``force`` and a reason)."""

    def __call__(self, settings: Settings, registry: Registry, name: str, version: str,
                 actor: str, reason: str | None = None, force: bool = False,
                 ) -> tuple[ModelVersion, GateDecision | None]: ...
