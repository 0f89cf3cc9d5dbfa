"""Per-tenant spend budgets. Pure.

A budget covers one calendar month (UTC). What counts against it is what the ledger has
billed the tenant this month plus a reservation for the tenant's unfinished jobs; a new
submission adds its own worst case. Nothing about a job's engine time is known before it
runs, so the worst case is priced at the model's list prices (`PENNY_PRICES`): its
estimated prompt tokens at the input price plus its whole `max_tokens` at the output price.
A hard budget refuses a submission that would take the total past it; a soft budget
accepts it and records a warning on the submission.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from penny.errors import BudgetExceeded
from penny.settings import Budget, ModelPrice

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class TokenBound:
    """The most a job (or a group of a model's jobs) can make the engine process."""

    model: str
    prompt_tokens: int
    max_output_tokens: int


@dataclass(frozen=True)
class MonthSpend:
    billed_usd: Decimal
    reserved: Sequence[TokenBound]  # the tenant's jobs not finished yet


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def worst_case_usd(bounds: Sequence[TokenBound], price_for: Callable[[str], ModelPrice]
                   ) -> Decimal:
    total = Decimal(0)
    for bound in bounds:
        price = price_for(bound.model)
        total += (Decimal(bound.prompt_tokens) * price.list_input_usd_per_mtok
                  + Decimal(bound.max_output_tokens) * price.list_output_usd_per_mtok)
    return total / _MILLION


def check_budget(
    tenant: str, budget: Budget, billed_usd: Decimal, reserved_usd: Decimal, asked_usd: Decimal
) -> list[dict[str, object]]:
    """Raise BudgetExceeded if `asked_usd` on top of what is billed and reserved this month
    passes the hard budget; return the warnings to record (the soft budget passed), or
    none. A request that asks nothing (a batch whose lines are not read yet) is refused
    only when nothing is left."""
    committed = billed_usd + reserved_usd
    total = committed + asked_usd
    hard = budget.hard_usd
    if hard is not None and (total > hard or (asked_usd == 0 and committed >= hard)):
        left = max(hard - committed, Decimal(0))
        raise BudgetExceeded(
            f"tenant {tenant!r} has ${left:.6f} left of its ${hard} monthly budget "
            f"(billed ${billed_usd:.6f}, reserved for unfinished jobs ${reserved_usd:.6f}); "
            f"this request may cost up to ${asked_usd:.6f}", param="budget")
    if budget.soft_usd is not None and total > budget.soft_usd:
        return [{"code": "soft_budget_exceeded",
                 "message": f"tenant {tenant!r} may reach ${total:.6f} this month, over its "
                            f"${budget.soft_usd} soft budget"}]
    return []
