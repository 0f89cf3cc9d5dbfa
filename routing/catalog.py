"""What `/v1/models` says about each model: its tier, its label and the engine options it
was declared with, plus the two routed names (`auto`, `cascade`) when tiers exist."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from routing.router import AUTO_MODEL, CASCADE_MODEL


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    kind: str  # "chat", "embedding" or "router"
    tier: int | None  # 0-based, cheapest first; None: not a tier
    description: str | None
    engine: Mapping[str, Any]

    def penny_fields(self) -> dict[str, Any]:
        return {"penny_kind": self.kind, "penny_tier": self.tier,
                "penny_description": self.description, "penny_engine": dict(self.engine)}


def build_catalog(
    chat_models: Sequence[str],
    embedding_models: Sequence[str],
    tiers: Sequence[str],
    descriptions: Mapping[str, str],
    engines: Mapping[str, Mapping[str, Any]],
) -> list[CatalogEntry]:
    entries = [
        CatalogEntry(name, "chat", list(tiers).index(name) if name in tiers else None,
                     descriptions.get(name), engines.get(name, {}))
        for name in chat_models
    ]
    entries += [CatalogEntry(name, "embedding", None, descriptions.get(name), {})
                for name in embedding_models]
    if tiers:
        order = " < ".join(tiers)
        entries += [
            CatalogEntry(AUTO_MODEL, "router", None,
                         f"routes each job to the cheapest tier its features call for "
                         f"({order})", {}),
            CatalogEntry(CASCADE_MODEL, "router", None,
                         f"runs the cheapest tier first and escalates low-confidence "
                         f"answers to the next ({order})", {}),
        ]
    return sorted(entries, key=lambda e: e.id)
