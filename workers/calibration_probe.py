"""The calibration probe: a short, fixed set of requests run on the real engine, timed
alone and as one full batch, fitted into the cost model's speeds (`ledger.cost_model`).

Alone, each request gets a cache salt of its own, so nothing comes from the prefix cache
and every prompt token is prefilled: exactly the naive way the counterfactual models. The
shapes span short and long prompts and short and long answers, so the fit separates the
fixed cost of an engine call from prefill and decode (a probe of one shape cannot).
"""

from __future__ import annotations

import os
import platform
import statistics
import uuid
from dataclasses import dataclass
from typing import Any

from ledger.cost_model import AloneSample, fit_alone
from models.costing import MeasuredSpeed
from penny.settings import Settings
from workers.engine import Engine, GenerationRequest, Sampling

# A neutral paragraph, repeated to make longer prompts.
_FILLER = ("The harbour town keeps a small museum of maps, tide tables and ship models, "
           "and its volunteers answer questions from visitors about the coast. ")
# Asked of every prompt: an answer that runs on, so max_tokens decides its length.
_TASK = "Count from 1 to 200, separated by commas."
PROMPT_REPEATS = (0, 6, 24)  # about 15, 190 and 730 prompt tokens
ANSWER_TOKENS = (4, 48)
FULL_BATCH_ANSWER_TOKENS = 32


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


def run_probe(engine: Engine, settings: Settings, repeats: int = 2) -> MeasuredSpeed:
    """Time every shape alone `repeats` times (the median of each counts) and one full
    batch of `settings.calibration_batch_jobs` requests; fit the speeds."""
    engine.generate([ProbeShape(0, 2).request()])  # warm-up, not counted
    samples: list[AloneSample] = []
    raw: list[dict[str, Any]] = []
    for shape in probe_shapes():
        timed = [_alone(engine, shape) for _ in range(repeats)]
        median = statistics.median(s.seconds for s in timed)
        samples.append(AloneSample(timed[0].prompt_tokens, timed[0].output_tokens, median))
        raw.extend({"batch_jobs": 1, "prompt_tokens": s.prompt_tokens,
                    "output_tokens": s.output_tokens, "seconds": s.seconds} for s in timed)
    overhead, prefill, decode_alone = fit_alone(samples, relative=True)

    jobs = settings.calibration_batch_jobs
    # Short and medium prompts: the batch measures decoding, and prefill (already fitted)
    # is only subtracted, so it should be a small part of the batch's time.
    shapes = PROMPT_REPEATS[:2]
    batch = [ProbeShape(shapes[i % len(shapes)], FULL_BATCH_ANSWER_TOKENS).request()
             for i in range(jobs)]
    generated = engine.generate(batch)
    prompt = sum(g.prompt_tokens - g.cached_tokens for g in generated.generations)
    output = sum(g.output_tokens for g in generated.generations)
    raw.append({"batch_jobs": jobs, "prompt_tokens": prompt, "output_tokens": output,
                "seconds": generated.engine_seconds})
    decoding = generated.engine_seconds - overhead - prefill * prompt
    decode_full = decoding / output if output else decode_alone
    # Between nothing and the alone rate: noise must not make batching cost more per token.
    decode_full = min(max(decode_full, 0.0), decode_alone)
    return MeasuredSpeed(
        request_overhead_s=overhead, prefill_s_per_token=prefill,
        decode_s_per_token_bs1=decode_alone, decode_s_per_token_full=decode_full,
        full_batch_jobs=jobs, machine=machine_facts(), engine_settings=engine_facts(settings),
        samples=raw)
