"""The calibration probe: a short, fixed set of requests run on the real engine, timed
alone and as one full batch, fitted into the cost model's speeds (`ledger.cost_model`).

Alone, each request gets a cache salt of its own, so nothing comes from the prefix cache
and every prompt token is prefilled: exactly the naive way the counterfactual models. The
shapes are a short, a long and a longer prompt times a short and a long answer, so the fit
separates the fixed cost of an engine call from prefill, decode, and the decoding that
slows as the context grows (a long answer after a long prompt decodes more slowly per
token than after a short one; a probe of one shape separates nothing); each shape runs
twice and its median counts. How well the fit reproduces the six shapes' times is the
calibration's stated precision (`fit_error`).

The probe runs within a time budget (`PENNY_CALIBRATION_BUDGET_SECONDS`): before each
engine call it predicts the call's seconds from what it has measured so far and stops,
storing nothing, when the call would end past the budget (`CalibrationSkipped`). A call
cannot be interrupted, so a prediction that was too low can overrun the budget by part
of one call. On a busy machine a calibration would be both slow and wrong (the seconds
measured include other processes' work), so skipping is the honest result: the ledger
then claims no saving for the model, as without a calibration.
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledger.cost_model import AloneFit, AloneSample, context_tokens, fit_alone
from models.costing import MeasuredSpeed
from penny.errors import PennyError
from penny.settings import Settings
from workers.engine import BatchGeneration, Engine, GenerationRequest, Sampling

# A neutral paragraph, repeated to make longer prompts.
_FILLER = ("The harbour town keeps a small museum of maps, tide tables and ship models, "
           "and its volunteers answer questions from visitors about the coast. ")
# Asked of every prompt: an answer that runs on, so max_tokens decides its length.
_TASK = "Count from 1 to 200, separated by commas."
PROMPT_REPEATS = (0, 24, 48)  # about 15, 730 and 1,450 prompt tokens
ANSWER_TOKENS = (4, 48)
FULL_BATCH_ANSWER_TOKENS = 32
REPEATS = 2


@dataclass(frozen=True)
class ProbeShape:
    filler_repeats: int
    max_tokens: int

    def request(self) -> GenerationRequest:
        content = (_FILLER * self.filler_repeats) + _TASK
        # A fresh salt: this request never reuses another's prefix-cache blocks.
        return GenerationRequest(key=str(uuid.uuid4()), sampling=Sampling(self.max_tokens),
                                 messages=(("user", content),), cache_salt=str(uuid.uuid4()))


def probe_shapes() -> list[ProbeShape]:
    return [ProbeShape(r, t) for r in PROMPT_REPEATS for t in ANSWER_TOKENS]


def fitting_shapes(engine: Engine, settings: Settings) -> list[ProbeShape]:
    """The probe's shapes whose prompt and answer fit the model's context window (a model
    started with a smaller window probes the shorter prompts only)."""
    window = settings.context_tokens_for(engine.model_name)
    return [shape for shape in probe_shapes()
            if len(engine.prompt_token_ids(shape.request())) + shape.max_tokens <= window]


class CalibrationSkipped(PennyError):
    """The probe could not finish within its time budget; nothing was stored."""

    code = "calibration_skipped"


@dataclass
class ProbeBudget:
    """Seconds the probe may take, counted from its creation on `clock`."""

    seconds: float
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def spent(self) -> float:
        return self.clock() - self.started

    def check(self, what: str, predicted_s: float) -> None:
        """Raise `CalibrationSkipped` if `what`, predicted to take `predicted_s`, would
        end past the budget."""
        spent = self.spent()
        if spent + predicted_s >= self.seconds:
            why = (f"{what} was predicted to take {predicted_s:.1f} s more" if predicted_s
                   else f"no time was left for {what}")
            raise CalibrationSkipped(
                f"calibration skipped: {why}, {spent:.1f} s of the {self.seconds:g} s "
                "budget spent; nothing was stored. Calibrate on a quieter machine or raise "
                "PENNY_CALIBRATION_BUDGET_SECONDS.")


def fit_error(samples: list[AloneSample], fit: AloneFit) -> float:
    """The largest relative gap between a shape's measured seconds and the fit's."""
    gaps = [abs(fit.seconds(s.prompt_tokens, s.output_tokens) - s.seconds) / s.seconds
            for s in samples if s.seconds > 0]
    return max(gaps, default=0.0)


def machine_facts() -> dict[str, Any]:
    """What the speeds were measured on, and how busy it was when they were."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cpus": os.cpu_count(), "machine": platform.machine(),
            "processor": platform.processor(), "system": platform.system(),
            "python": platform.python_version(), "load_average_1m": round(load[0], 2)}


def engine_facts(settings: Settings) -> dict[str, Any]:
    return {name: value for name, value in settings.model_dump(mode="json").items()
            if name.startswith("engine_")}


def _alone(engine: Engine, shape: ProbeShape) -> AloneSample:
    generated = engine.generate([shape.request()])
    [g] = generated.generations
    return AloneSample(prompt_tokens=g.prompt_tokens - g.cached_tokens,
                       output_tokens=g.output_tokens, seconds=generated.engine_seconds)


def _predict_alone(engine: Engine, samples: list[AloneSample], shape: ProbeShape) -> float:
    """Seconds of `shape` alone by the fit of what was measured so far; with nothing
    measured yet, nothing can be predicted (0: the call starts if any budget is left)."""
    if not samples:
        return 0.0
    prompt = len(engine.prompt_token_ids(shape.request()))
    return fit_alone(samples).seconds(prompt, shape.max_tokens)


def run_probe(engine: Engine, settings: Settings, repeats: int = REPEATS,
              progress: Callable[[str], None] = lambda _: None,
              budget: ProbeBudget | None = None) -> MeasuredSpeed:
    """Time every shape alone `repeats` times (the median of each counts) and one full
    batch of `settings.calibration_batch_jobs` requests; fit the speeds. Raises
    `CalibrationSkipped` when the next call would end past the budget."""
    budget = budget or ProbeBudget(settings.calibration_budget_seconds)
    shapes = fitting_shapes(engine, settings)
    calls = 1 + len(shapes) * repeats + 1
    done = 0

    def run(what: str, predicted: float, call: Callable[[], Any]) -> Any:
        nonlocal done
        budget.check(what, predicted)
        result = call()
        done += 1
        progress(f"calibrating {engine.model_name}: {done}/{calls} engine calls ({what}), "
                 f"{budget.spent():.1f} s of the {budget.seconds:g} s budget")
        return result

    warm_up = ProbeShape(0, 2)
    run("warm-up", 0.0, lambda: engine.generate([warm_up.request()]))
    samples: list[AloneSample] = []
    measured: list[AloneSample] = []
    raw: list[dict[str, Any]] = []
    for shape in shapes:
        timed = []
        for _ in range(repeats):
            what = f"{shape.max_tokens} tokens alone after {shape.filler_repeats} paragraphs"
            sample = run(what, _predict_alone(engine, measured, shape),
                         functools.partial(_alone, engine, shape))
            timed.append(sample)
            measured.append(sample)
        median = statistics.median(s.seconds for s in timed)
        samples.append(AloneSample(timed[0].prompt_tokens, timed[0].output_tokens, median))
        raw.extend({"batch_jobs": 1, "prompt_tokens": s.prompt_tokens,
                    "output_tokens": s.output_tokens, "seconds": s.seconds} for s in timed)
    fit = fit_alone(samples, relative=True)
    error = fit_error(samples, fit)

    jobs = settings.calibration_batch_jobs
    # Short prompts: the batch measures decoding, and prefill (already fitted) is only
    # subtracted, so it should be a small part of the batch's time.
    batch = [ProbeShape(0, FULL_BATCH_ANSWER_TOKENS).request() for _ in range(jobs)]
    short_prompt = min(s.prompt_tokens for s in samples)
    # At best a batch step takes as long as one request's (decoding k sequences at once
    # costs more): the lowest honest prediction.
    predicted = fit.overhead + fit.prefill * short_prompt * jobs + fit.decode \
        * FULL_BATCH_ANSWER_TOKENS
    generated: BatchGeneration = run(f"a batch of {jobs}", predicted,
                                     lambda: engine.generate(batch))
    prompt = sum(g.prompt_tokens - g.cached_tokens for g in generated.generations)
    output = sum(g.output_tokens for g in generated.generations)
    raw.append({"batch_jobs": jobs, "prompt_tokens": prompt, "output_tokens": output,
                "seconds": generated.engine_seconds})
    # Each sequence attends over its own context, batched or not: that part is the
    # context term's, the rest of the decoding is the batch's per-token rate.
    context = sum(context_tokens(g.prompt_tokens, g.output_tokens)
                  for g in generated.generations)
    decoding = (generated.engine_seconds - fit.overhead - fit.prefill * prompt
                - fit.context * context)
    decode_full = decoding / output if output else fit.decode
    # Between nothing and the alone rate: noise must not make batching cost more per token.
    decode_full = min(max(decode_full, 0.0), fit.decode)
    return MeasuredSpeed(
        request_overhead_s=fit.overhead, prefill_s_per_token=fit.prefill,
        decode_s_per_token_bs1=fit.decode, decode_s_per_token_full=decode_full,
        full_batch_jobs=jobs, machine={**machine_facts(), "fit_error": round(error, 4),
                                       "probe_seconds": round(budget.spent(), 2)},
        engine_settings=engine_facts(settings), samples=raw,
        decode_s_per_context_token=fit.context)
