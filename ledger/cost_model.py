"""Pure cost model of one served model: what engine seconds a job needs alone or in a batch,
from a calibration measured on the real engine, and what those seconds cost on a price card.

Seconds are modelled as a straight line in the work a job makes the engine do:

    alone:    overhead + prefill * uncached prompt tokens + decode(1) * output tokens
              + context * context tokens
    batched:  overhead / k + prefill * uncached prompt tokens + decode(k) * output tokens
              + context * context tokens

`overhead` is what one engine call costs whatever its size (scheduling, the first step's
fixed work); a batch of k jobs shares it. A decode step of k sequences takes about
`a + b * k` seconds (a: reading the weights, b: each sequence's own work), so one output
token costs `a / k + b`; the calibration's batch-size-1 and full-batch figures fix a and b.

Each output token also attends over everything before it: the prompt (cached or not) and
the tokens generated so far. On a CPU that attention is a large part of a small model's
decode step, so decoding slows as the context grows. `context tokens` sums the context of
every decode step, `prompt * output + output * (output - 1) / 2` (see `context_tokens`),
and `context` is its seconds per token of context per decoded token. It is the same alone
and in a batch: each sequence attends over its own context whatever runs beside it.

Everything here is Decimal so that money derived from it adds up to the cent.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

_MILLION = Decimal(1_000_000)
_SECONDS_PER_HOUR = Decimal(3600)
# Ten decimal places: the ledger's money scale. Every modelled amount is rounded to it
# before amounts are subtracted, so differences (the savings) add up exactly.
MONEY_QUANTUM = Decimal("0.0000000001")


def money(value: Decimal) -> Decimal:
    return value.quantize(MONEY_QUANTUM)


def seconds_decimal(seconds: float) -> Decimal:
    """A measured float as the Decimal of its shortest repr: the same float always gives
    the same Decimal, so costs computed twice agree to the last digit."""
    return Decimal(repr(seconds))


@dataclass(frozen=True)
class PriceCard:
    """One version of a model's prices. `id` is the stored version (None before storing)."""

    model: str
    engine_hour_usd: Decimal
    list_input_usd_per_mtok: Decimal | None = None
    list_cached_input_usd_per_mtok: Decimal | None = None
    list_output_usd_per_mtok: Decimal | None = None
    id: int | None = None

    def engine_cost(self, seconds: Decimal) -> Decimal:
        return money(seconds * self.engine_hour_usd / _SECONDS_PER_HOUR)

    def list_cost(self, prompt_tokens: int, cached_tokens: int, output_tokens: int
                  ) -> Decimal:
        """What a hosted API would charge at this card's list prices (unset prices: 0)."""
        uncached = prompt_tokens - cached_tokens
        cached_price = (self.list_cached_input_usd_per_mtok
                        if self.list_cached_input_usd_per_mtok is not None
                        else self.list_input_usd_per_mtok)
        total = (Decimal(uncached) * (self.list_input_usd_per_mtok or 0)
                 + Decimal(cached_tokens) * (cached_price or 0)
                 + Decimal(output_tokens) * (self.list_output_usd_per_mtok or 0))
        return money(total / _MILLION)


@dataclass(frozen=True)
class Calibration:
    """One version of a model's measured engine speed (see `workers.calibration_probe`)."""

    model: str
    request_overhead_s: Decimal
    prefill_s_per_token: Decimal
    decode_s_per_token_bs1: Decimal
    decode_s_per_token_full: Decimal
    full_batch_jobs: int
    # Seconds per token of context per decoded token (0: a calibration from before the
    # probe measured it, which models decoding as independent of the context).
    decode_s_per_context_token: Decimal = Decimal(0)
    id: int | None = None

    def decode_s_per_token(self, batch_jobs: int) -> Decimal:
        """Seconds per output token when `batch_jobs` sequences decode together,
        interpolated as a / k + b between the two measured points. Never more than alone,
        never less than at a full batch: the model does not extrapolate past what was
        measured."""
        k = max(batch_jobs, 1)
        full = max(self.full_batch_jobs, 1)
        alone, at_full = self.decode_s_per_token_bs1, self.decode_s_per_token_full
        if k == 1 or full == 1 or at_full >= alone:
            return alone
        if k >= full:
            return at_full
        per_step = (alone - at_full) * full / (full - 1)  # a
        per_sequence = alone - per_step  # b
        return per_step / k + per_sequence

    def context_seconds(self, prompt_tokens: int, output_tokens: int) -> Decimal:
        """Decode seconds spent attending over the context (see `context_tokens`)."""
        return self.decode_s_per_context_token * context_tokens(prompt_tokens, output_tokens)

    def alone_seconds(self, uncached_prompt_tokens: int, output_tokens: int,
                      prompt_tokens: int | None = None) -> Decimal:
        """Engine seconds of the job sent on its own. `prompt_tokens` is the whole prompt
        its decoding attends over, cached part included (None: the uncached tokens)."""
        context = uncached_prompt_tokens if prompt_tokens is None else prompt_tokens
        return (self.request_overhead_s
                + self.prefill_s_per_token * max(uncached_prompt_tokens, 0)
                + self.decode_s_per_token_bs1 * max(output_tokens, 0)
                + self.context_seconds(context, output_tokens))

    def batched_seconds(self, uncached_prompt_tokens: int, output_tokens: int,
                        batch_jobs: int, prompt_tokens: int | None = None) -> Decimal:
        """Engine seconds of the job's share of a batch of `batch_jobs` (`prompt_tokens`
        as in `alone_seconds`)."""
        k = max(batch_jobs, 1)
        context = uncached_prompt_tokens if prompt_tokens is None else prompt_tokens
        return (self.request_overhead_s / k
                + self.prefill_s_per_token * max(uncached_prompt_tokens, 0)
                + self.decode_s_per_token(k) * max(output_tokens, 0)
                + self.context_seconds(context, output_tokens))


def context_tokens(prompt_tokens: int, output_tokens: int) -> int:
    """Tokens of context summed over a job's decode steps: the i-th output token
    (i = 0, 1, ...) attends over the prompt and the i tokens generated before it."""
    prompt, output = max(prompt_tokens, 0), max(output_tokens, 0)
    return prompt * output + output * (output - 1) // 2


@dataclass(frozen=True)
class CostBasis:
    """A model's prices and speed: what the ledger needs to model a job on it."""

    card: PriceCard
    calibration: Calibration

    @property
    def model(self) -> str:
        return self.card.model


@dataclass(frozen=True)
class AloneSample:
    """One request timed alone: its uncached prompt tokens, output tokens and seconds."""

    prompt_tokens: int
    output_tokens: int
    seconds: float


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None when the system is singular (a
    pivot vanishing next to the matrix's largest entry)."""
    n = len(vector)
    rows = [[*matrix[i], vector[i]] for i in range(n)]
    tolerance = 1e-10 * max((abs(v) for row in matrix for v in row), default=0.0)
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(rows[r][col]))
        if abs(rows[pivot][col]) <= tolerance:
            return None
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(n):
            if r != col:
                factor = rows[r][col] / rows[col][col]
                rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col], strict=True)]
    return [rows[i][n] / rows[i][i] for i in range(n)]


@dataclass(frozen=True)
class AloneFit:
    """Seconds of a request alone as `fit_alone` fitted them."""

    overhead: float
    prefill: float
    decode: float
    context: float = 0.0

    def seconds(self, prompt_tokens: int, output_tokens: int) -> float:
        return (self.overhead + self.prefill * prompt_tokens + self.decode * output_tokens
                + self.context * context_tokens(prompt_tokens, output_tokens))


_OVERHEAD, _PREFILL, _DECODE, _CONTEXT = range(4)


def _features(sample: AloneSample) -> tuple[float, float, float, float]:
    return (1.0, float(sample.prompt_tokens), float(sample.output_tokens),
            float(context_tokens(sample.prompt_tokens, sample.output_tokens)))


def fit_alone(samples: list[AloneSample], relative: bool = False, context: bool = True
              ) -> AloneFit:
    """Least-squares fit of `seconds = overhead + prefill * prompt + decode * output +
    context * context_tokens(prompt, output)` to requests timed alone. A coefficient the
    data would make negative (noise on a tiny term) is fixed at 0 and the others are
    fitted again, so the model never says more tokens cost less time. Terms the samples
    cannot separate are dropped: the context term first (it needs both prompt and output
    lengths to vary), then the overhead.

    `relative` minimises squared relative errors instead of squared seconds: plain least
    squares lets the longest sample set the line (its error is the largest in seconds), so
    a long prompt's slower decoding leaks into the prefill term and short requests, the
    common case, come out dearer than they are.

    `context=False` fits the straight line without the context term (it stays 0)."""
    if not samples:
        raise ValueError("no samples to fit")
    features = [_features(s) for s in samples]
    targets = [s.seconds for s in samples]
    weights = [1.0 / (t * t) if relative and t > 0 else 1.0 for t in targets]
    free = [_OVERHEAD, _PREFILL, _DECODE, *([_CONTEXT] if context else [])]
    while free:
        # Scaled columns: the context feature is thousands of times the others, and
        # elimination's singularity test must not mistake a small column for a zero one.
        scale = [max(abs(f[i]) for f in features) or 1.0 for i in free]
        matrix = [[sum(w * f[i] * f[j] for f, w in zip(features, weights, strict=True))
                   / (si * sj) for j, sj in zip(free, scale, strict=True)]
                  for i, si in zip(free, scale, strict=True)]
        vector = [sum(w * f[i] * t for f, t, w in zip(features, targets, weights, strict=True))
                  / si for i, si in zip(free, scale, strict=True)]
        solution = _solve(matrix, vector)
        if solution is None:
            if _CONTEXT in free:
                free.remove(_CONTEXT)
            elif _OVERHEAD in free and len(free) == 3:
                free.remove(_OVERHEAD)
            else:
                free.pop()
            continue
        values = [v / si for v, si in zip(solution, scale, strict=True)]
        negative = [i for i, v in zip(free, values, strict=True) if v < 0]
        if not negative:
            coefficients = [0.0, 0.0, 0.0, 0.0]
            for i, v in zip(free, values, strict=True):
                coefficients[i] = v
            return AloneFit(*coefficients)
        free.remove(negative[0])
    return AloneFit(0.0, 0.0, 0.0)
