"""Pure counterfactual and attribution of one job: what it would have cost the naive way,
and which mechanism saved how much of the difference.

The naive way: the job sent alone, with no result cache, no single-flight and no prefix
reuse, on the baseline model, allowed its requested max_tokens.

How the parts add up to the total saving exactly: for a job the engine ran, the modelled
cost is taken from the naive cost through a fixed order of removal, one mechanism at a
time, each step rounded to the ledger's money scale before differences are taken:

    N0  naive: baseline model, alone, whole prompt (as sent) prefilled, the output it was
        allowed
    N1  on the model that served it                      routing       = N0 - N1
    N1c with its prompt as compressed (opt-in)           compression   = N1 - N1c
    N2  with the output it actually made                 output_limit  = N1c - N2
    N3  with its cached prefix not prefilled             prefix_cache  = N2 - N3
    N4  sharing a batch of the size it ran in            batching      = N3 - N4
        what it really cost (its measured engine share)  unexplained   = N4 - actual

The sum telescopes to N0 - actual, whatever the calibration says. `unexplained` is what the
model cannot account for (a busy machine, a calibration taken elsewhere); it may be negative
and is never spread over the other parts.

A job served without running (exact cache, semantic cache, single-flight) cost nothing;
its whole naive cost is the saving of the mechanism that served it.

Routing and cascades: `routing` (N0 - N1) is what running on a cheaper tier than the
baseline saved. A cascade attempt that escalated is a row of its own that the naive way
would never have run: its naive cost is 0 and its whole cost is a negative routing saving
(the cascade's loss). Summed over a cascade job's rows, the routing column is what the
tier it ended on saved against the baseline minus every attempt it paid for on the way.

Failover: when a whole engine call raises, the seconds it ran were spent on its jobs, but
the engine cannot say on which; the batch is split and its jobs carry equal shares of those
seconds to their next call (`workers.execution`). A job's row bills its share in
`cost_usd`, and `failover` (always <= 0) is minus what the share cost: the naive way, each
job alone, never ran the batch that raised. The other parts are taken against the cost
without it, so they mean what they mean for any job and the sum still telescopes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from ledger.cost_model import CostBasis, money

EXACT_CACHE = "exact_cache"
SEMANTIC_CACHE = "semantic_cache"
SINGLE_FLIGHT = "single_flight"
PREFIX_CACHE = "prefix_cache"
BATCHING = "batching"
ROUTING = "routing"
OUTPUT_LIMIT = "output_limit"
COMPRESSION = "compression"
FAILOVER = "failover"
# The ledger's column order (saving_<mechanism>_usd).
MECHANISMS = (EXACT_CACHE, SEMANTIC_CACHE, SINGLE_FLIGHT, PREFIX_CACHE, BATCHING, ROUTING,
              OUTPUT_LIMIT, COMPRESSION, FAILOVER)


def saving_column(mechanism: str) -> str:
    return f"saving_{mechanism}_usd"


SAVING_COLUMNS = tuple(saving_column(m) for m in MECHANISMS)


def _zeros() -> dict[str, Decimal]:
    return dict.fromkeys(MECHANISMS, Decimal(0))


@dataclass(frozen=True)
class Attribution:
    """One job's counterfactual: `naive_cost_usd - cost_usd == sum(savings) + unexplained`."""

    cost_usd: Decimal
    naive_cost_usd: Decimal
    savings: Mapping[str, Decimal] = field(default_factory=_zeros)
    unexplained_usd: Decimal = Decimal(0)

    @property
    def saved_usd(self) -> Decimal:
        return self.naive_cost_usd - self.cost_usd

    def columns(self) -> dict[str, Decimal]:
        """The ledger row's counterfactual columns."""
        return {
            "naive_cost_usd": self.naive_cost_usd,
            **{saving_column(m): self.savings.get(m, Decimal(0)) for m in MECHANISMS},
            "unexplained_usd": self.unexplained_usd,
        }


@dataclass(frozen=True)
class EngineJob:
    """What the ledger knows about a job the engine ran."""

    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    requested_max_tokens: int  # what the client asked for
    applied_max_tokens: int  # what it ran with (lower when a cap policy cut it)
    finish_reason: str | None
    batch_jobs: int  # how many jobs shared its engine call
    # The prompt's tokens before opt-in compression cut its context (None: not compressed,
    # `prompt_tokens` is what was sent).
    original_prompt_tokens: int | None = None

    @property
    def sent_prompt_tokens(self) -> int:
        return (self.prompt_tokens if self.original_prompt_tokens is None
                else max(self.original_prompt_tokens, self.prompt_tokens))

    @property
    def naive_output_tokens(self) -> int:
        """The output it would have made with its requested max_tokens. Only a job that was
        cut short by a lowered cap could have made more; it is counted as using all it asked
        for, the most it could have cost."""
        if self.applied_max_tokens < self.requested_max_tokens and self.finish_reason == "length":
            return self.requested_max_tokens
        return self.output_tokens


def _failover_share(cost: Decimal, failover_usd: Decimal) -> Decimal:
    """The part of `cost` that paid for failed engine calls: between 0 and all of it."""
    return min(max(money(failover_usd), Decimal(0)), cost)


def attribute_engine_job(job: EngineJob, cost_usd: Decimal, served: CostBasis,
                         baseline: CostBasis, failover_usd: Decimal = Decimal(0)
                         ) -> Attribution:
    """Split what the naive way would have cost into the fixed order of removal above;
    `failover_usd` is the part of `cost_usd` that paid for failed engine calls."""
    uncached = job.prompt_tokens - job.cached_tokens
    naive_out = job.naive_output_tokens
    sent = job.sent_prompt_tokens
    n0 = baseline.card.engine_cost(baseline.calibration.alone_seconds(sent, naive_out))
    cal, card = served.calibration, served.card
    n1 = card.engine_cost(cal.alone_seconds(sent, naive_out))
    n1c = card.engine_cost(cal.alone_seconds(job.prompt_tokens, naive_out))
    n2 = card.engine_cost(cal.alone_seconds(job.prompt_tokens, job.output_tokens))
    # A cached prefix is not prefilled, but decoding still attends over it.
    n3 = card.engine_cost(cal.alone_seconds(uncached, job.output_tokens, job.prompt_tokens))
    n4 = card.engine_cost(cal.batched_seconds(uncached, job.output_tokens, job.batch_jobs,
                                              job.prompt_tokens))
    cost = money(cost_usd)
    failover = _failover_share(cost, failover_usd)
    savings = _zeros()
    savings[ROUTING] = n0 - n1
    savings[COMPRESSION] = n1 - n1c
    savings[OUTPUT_LIMIT] = n1c - n2
    savings[PREFIX_CACHE] = n2 - n3
    savings[BATCHING] = n3 - n4
    savings[FAILOVER] = -failover
    return Attribution(cost_usd=cost, naive_cost_usd=n0, savings=savings,
                       unexplained_usd=n4 - (cost - failover))


def attribute_served_without_running(naive_cost_usd: Decimal, mechanism: str
                                     ) -> Attribution:
    """A job answered by `mechanism` without the engine: all its naive cost is saved."""
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown mechanism {mechanism!r}")
    naive = money(naive_cost_usd)
    savings = _zeros()
    savings[mechanism] = naive
    return Attribution(cost_usd=Decimal(0), naive_cost_usd=naive, savings=savings)


def attribute_escalated_attempt(cost_usd: Decimal, failover_usd: Decimal = Decimal(0)
                                ) -> Attribution:
    """A cascade attempt whose answer was not kept: the naive way sends the job once, to
    the baseline, so this attempt's whole cost is the cascade's loss (what failed calls
    cost of it, failover's)."""
    cost = money(cost_usd)
    failover = _failover_share(cost, failover_usd)
    savings = _zeros()
    savings[ROUTING] = -(cost - failover)
    savings[FAILOVER] = -failover
    return Attribution(cost_usd=cost, naive_cost_usd=Decimal(0), savings=savings)


def unmodelled(cost_usd: Decimal, failover_usd: Decimal = Decimal(0)) -> Attribution:
    """A job whose model has no calibration (or that failed): the ledger claims no saving
    for it — but what failed engine calls cost of it is failover's loss all the same."""
    cost = money(cost_usd)
    failover = _failover_share(cost, failover_usd)
    savings = _zeros()
    savings[FAILOVER] = -failover
    return Attribution(cost_usd=cost, naive_cost_usd=cost - failover, savings=savings)
