"""Privacy classes: every entity key, feature and request field says what kind of data it is.

A definition carries its class as the Feast tag ``privacy`` (on an entity for its join keys,
on a field for a feature or a request field), so Feast's UI, the registry and the catalog all
show it. A feature may also take it from its view's tags: ``privacy:<feature>`` for one
feature, ``privacy`` for all of them (on-demand views in python mode cannot tag their output
fields: Feast compares the declared fields with the inferred ones, tags included). The
classes:

- ``none``: nothing about a person (a merchant's volume, a transaction's hour);
- ``pseudonymous``: about a person, behind a key that does not name them (a card id, the
  card's spending pattern);
- ``personal``: names or locates a person, or is sensitive by itself.

The demo repo classifies everything (its lint test fails on a definition without a class);
on a team's own repo `skewless doctor` warns about what is unclassified.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PRIVACY_TAG = "privacy"
CLASSES = ("none", "pseudonymous", "personal")


@dataclass(frozen=True)
class Unclassified:
    """A definition without a valid privacy class."""

    kind: str  # entity key, feature, request field
    name: str  # view__feature for a feature, the join key or field name otherwise
    value: str | None  # the tag's value when it is not a class

    def describe(self) -> str:
        problem = ("has no privacy tag" if self.value is None
                   else f"has privacy {self.value!r}, not one of {', '.join(CLASSES)}")
        return f"{self.kind} {self.name} {problem}"


def declared(tags: dict[str, str] | None, view_tags: dict[str, str] | None = None,
             feature: str | None = None) -> str | None:
    """The privacy tag's value for a definition (a feature: its own, else its view's for it,
    else its view's), whether or not it is a class; None when there is none."""
    for source, key in ((tags, PRIVACY_TAG), (view_tags, f"{PRIVACY_TAG}:{feature}"),
                        (view_tags, PRIVACY_TAG)):
        if source and key in source and (key == PRIVACY_TAG or feature is not None):
            return source[key]
    return None


def privacy_class(tags: dict[str, str] | None, view_tags: dict[str, str] | None = None,
                  feature: str | None = None) -> str | None:
    """The class a definition's tags give it (None when missing or not a class)."""
    value = declared(tags, view_tags, feature)
    return value if value in CLASSES else None


def _check(kind: str, name: str, tags: dict[str, str] | None,
           view_tags: dict[str, str] | None = None,
           feature: str | None = None) -> Unclassified | None:
    value = declared(tags, view_tags, feature)
    return None if value in CLASSES else Unclassified(kind, name, value)


def unclassified(entities: Iterable[Any], feature_views: Iterable[Any],
                 on_demand_views: Iterable[Any]) -> list[Unclassified]:
    """Every entity key, feature and request field of these Feast definitions without a
    valid privacy class (an on-demand view's own features are classified like any other)."""
    from feast.feature_view import DUMMY_ENTITY_NAME

    out: list[Unclassified | None] = []
    for entity in entities:
        if entity.name == DUMMY_ENTITY_NAME:  # Feast's own, for views without entities
            continue
        for key in [entity.join_key or entity.name]:
            out.append(_check("entity key", key, entity.tags))
    for view in [*feature_views, *on_demand_views]:
        for field in view.features:
            out.append(_check("feature", f"{view.name}__{field.name}", field.tags, view.tags,
                              field.name))
    seen_requests: set[str] = set()
    for view in on_demand_views:
        for source in getattr(view, "source_request_sources", {}).values():
            for field in source.schema:
                if field.name not in seen_requests:
                    seen_requests.add(field.name)
                    out.append(_check("request field", field.name, field.tags))
    return [u for u in out if u is not None]
