"""Savings against the naive counterfactual, summed over ledger rows, and how they are shown
(the `penny run` summary and the batch APIs' `penny_cost` lead with them). Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ledger.attribution import MECHANISMS, saving_column

# How each mechanism is named to people.
MECHANISM_LABELS = {
    "exact_cache": "exact result cache",
    "semantic_cache": "semantic cache",
    "single_flight": "single-flight (identical jobs in flight)",
    "prefix_cache": "prefix cache",
    "batching": "batching",
    "routing": "routing and cascade",
    "output_limit": "output-length limits",
}


def _zeros() -> dict[str, Decimal]:
    return dict.fromkeys(MECHANISMS, Decimal(0))


def _plain(value: Decimal) -> str:
    return f"{value:f}"


@dataclass(frozen=True)
class SavingsTotals:
    """The counterfactual columns of many ledger rows, summed exactly."""

    cost_usd: Decimal = Decimal(0)
    naive_cost_usd: Decimal = Decimal(0)
    savings: Mapping[str, Decimal] = field(default_factory=_zeros)
    unexplained_usd: Decimal = Decimal(0)

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> SavingsTotals:
        """From a mapping with the ledger's column names (missing columns count 0)."""
        def get(name: str) -> Decimal:
            value = row.get(name)
            return Decimal(value) if value is not None else Decimal(0)
        return cls(cost_usd=get("cost_usd"), naive_cost_usd=get("naive_cost_usd"),
                   savings={m: get(saving_column(m)) for m in MECHANISMS},
                   unexplained_usd=get("unexplained_usd"))

    @classmethod
    def of_rows(cls, rows: Iterable[Mapping[str, Any]]) -> SavingsTotals:
        total = cls()
        for row in rows:
            total = total + cls.of_row(row)
        return total

    def __add__(self, other: SavingsTotals) -> SavingsTotals:
        return SavingsTotals(
            cost_usd=self.cost_usd + other.cost_usd,
            naive_cost_usd=self.naive_cost_usd + other.naive_cost_usd,
            savings={m: self.savings.get(m, Decimal(0)) + other.savings.get(m, Decimal(0))
                     for m in MECHANISMS},
            unexplained_usd=self.unexplained_usd + other.unexplained_usd,
        )

    @property
    def saved_usd(self) -> Decimal:
        return self.naive_cost_usd - self.cost_usd

    @property
    def saved_fraction(self) -> float | None:
        return float(self.saved_usd / self.naive_cost_usd) if self.naive_cost_usd else None

    def as_dict(self) -> dict[str, Any]:
        """The counterfactual part of `penny_cost`; money as plain decimal strings."""
        fraction = self.saved_fraction
        return {
            "naive_cost_usd": _plain(self.naive_cost_usd),
            "saved_vs_naive_usd": _plain(self.saved_usd),
            "saved_vs_naive_fraction": round(fraction, 4) if fraction is not None else None,
            "savings_by_mechanism_usd": {m: _plain(self.savings.get(m, Decimal(0)))
                                         for m in MECHANISMS},
            "unexplained_usd": _plain(self.unexplained_usd),
        }

    def summary_rows(self) -> list[tuple[str, str]]:
        """Label/value rows for a table: the saving, then each mechanism that moved, then
        what the model could not explain."""
        fraction = self.saved_fraction
        share = f" ({fraction:.0%})" if fraction is not None else ""
        rows = [
            ("naive cost (each job alone, no caches, baseline model)",
             f"${self.naive_cost_usd:.6f}"),
            ("saved vs naive", f"${self.saved_usd:.6f}{share}"),
        ]
        for mechanism in MECHANISMS:
            amount = self.savings.get(mechanism, Decimal(0))
            if amount:
                rows.append((f"  by {MECHANISM_LABELS[mechanism]}", f"${amount:.6f}"))
        rows.append(("  not explained by the cost model", f"${self.unexplained_usd:.6f}"))
        return rows
