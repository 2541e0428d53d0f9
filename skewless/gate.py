"""The acceptance gate's vocabulary, shared by the side that decides and the side that asks.

A promotion passes the gate when the candidate's metric on a point-in-time holdout is at
least production's minus a margin. Deciding needs the training side (a holdout built through
Feast, the models scored on it): that is ``training.evaluation.gate``. Asking needs only what is here —
the decision with its evidence, the refusal, and the signature of the function that promotes —
so the service takes a promoter from whoever builds it and never imports training/.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from skewless.registry import RegistryError

if TYPE_CHECKING:
    from skewless.registry import ModelVersion, Registry
    from skewless.settings import Settings


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

    def evidence(self) -> dict[str, Any]:
        return {"gate": asdict(self)}

    def explain(self) -> str:
        c = self.candidate
        if self.production is None or self.production.get("score") is None:
            own = c.get("training_holdout")
            return self.note + (f" (its training holdout {self.metric}: {own:.4f})"
                                if isinstance(own, float) else "")
        p = self.production
        window = self.holdout
        return (f"candidate {c['version']} {self.metric} {c['score']:.4f} vs production "
                f"{p['version']} {p['score']:.4f} (margin {self.margin:g}) on the holdout "
                f"{window['from']} to {window['to']}: {window['rows']:,} events, "
                f"{window['positives']:,} positives")


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
