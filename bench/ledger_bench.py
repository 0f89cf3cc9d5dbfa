"""The ledger's counterfactual checked against reality: run a file the naive way (each job
alone, a fresh cache salt each so no prefix is reused, no result cache, no single-flight)
and compare the engine seconds it really took with what the cost model, calibrated by the
same probe `penny calibrate` runs, says the naive way takes. Rounds alternate probe and
naive run so both see the same machine load. Also times the costing penny adds per job
at record time. Prints a table with the command and the machine.

    .venv/bin/python bench/ledger_bench.py [--file examples/requests.jsonl] [--rounds 2]
                                           [--batch-jobs 64] [--probe-repeats 2] [--compiled]
                                           [--probe-budget 3600]
                                           [--workload var/bench/workload.jsonl --sample 24]
                                           [--max-tokens 128]

`--workload` runs a seeded sample of a benchmark workload's items (`bench/workload.py`:
~1,000-token prompts, answers of up to 1,024 tokens, each with its requested max_tokens,
or at most `--max-tokens`) instead of `--file`: long contexts, where decoding slows the
most per token.

Needs no database: the calibration is kept in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def workload_requests(path: Path, sample: int, seed: int, max_tokens: int | None = None
                      ) -> bytes:
    """A seeded sample of a workload's items as a JSONL request file, each with its
    messages and requested max_tokens (at most `max_tokens`), as `bench/naive_runner.py`
    sends them."""
    sys.path.insert(0, str(REPO / "bench"))
    from workload import read

    items = list(read(path))
    chosen = random.Random(seed).sample(items, min(sample, len(items)))
    return b"".join(json.dumps({"custom_id": item.id, "messages": item.messages,
                                "max_tokens": min(item.max_tokens, max_tokens or item.max_tokens)
                                }).encode() + b"\n"
                    for item in chosen)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", type=Path, default=REPO / "examples" / "requests.jsonl")
    parser.add_argument("--workload", type=Path, default=None,
                        help="a workload file (bench/workload.py) to sample instead of --file")
    parser.add_argument("--sample", type=int, default=24,
                        help="requests sampled from --workload (seeded by --seed)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="cap each sampled request's max_tokens (a shorter run)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-jobs", type=int, default=64)
    parser.add_argument("--probe-repeats", type=int, default=2,
                        help="times each probe shape is run alone (the median counts)")
    parser.add_argument("--probe-budget", type=float, default=3600.0,
                        help="seconds the probe may take (a bench measures, it does not skip)")
    parser.add_argument("--compiled", action="store_true",
                        help="compile the model (slower start, faster engine)")
    args = parser.parse_args()

    from intake.files import parse_input_file
    from intake.limits import IntakeLimits
    from intake.service import jobs_for_file
    from ledger.attribution import EngineJob, attribute_engine_job
    from ledger.cost_model import (
        AloneFit,
        AloneSample,
        Calibration,
        CostBasis,
        PriceCard,
        context_tokens,
        fit_alone,
        seconds_decimal,
    )
    from models.costing import MeasuredSpeed
    from penny.settings import Settings
    from workers.calibration_probe import run_probe
    from workers.engine import GenerationRequest
    from workers.vllm_engine import VllmEngine

    settings = Settings(engine_enforce_eager=not args.compiled,
                        calibration_batch_jobs=args.batch_jobs,
                        calibration_budget_seconds=args.probe_budget)
    name, content = args.file.name, args.file.read_bytes()
    if args.workload is not None:
        name, content = args.workload.name, workload_requests(args.workload, args.sample,
                                                              args.seed, args.max_tokens)
    outcomes = parse_input_file(name, content, settings.max_json_depth)
    jobs = [j for j in jobs_for_file(outcomes, IntakeLimits.from_settings(settings))
            if j.error is None]
    engine = VllmEngine(settings, settings.default_model)

    def refit(speed: MeasuredSpeed, relative: bool = False, context: bool = True
              ) -> Calibration:
        """The same probe's samples fitted again: by plain least squares (`fit_alone`; the
        probe fits by relative error), or without the context term (the model before it
        had one): the medians of each shape alone, then the full batch's decoding as the
        probe does."""
        by_shape: dict[tuple[int, int], list[float]] = {}
        batch = None
        for sample in speed.samples:
            if sample["batch_jobs"] == 1:
                shape = (sample["prompt_tokens"], sample["output_tokens"])
                by_shape.setdefault(shape, []).append(sample["seconds"])
            else:
                batch = sample
        medians = [AloneSample(p, o, statistics.median(t)) for (p, o), t in by_shape.items()]
        fit = fit_alone(medians, relative=relative, context=context)
        decode_full = fit.decode
        if batch is not None and batch["output_tokens"]:
            # As the probe: the batch's sequences attend over their own short contexts.
            jobs_in_batch = speed.full_batch_jobs
            batch_context = jobs_in_batch * context_tokens(
                batch["prompt_tokens"] // jobs_in_batch, batch["output_tokens"] // jobs_in_batch)
            decoding = (batch["seconds"] - fit.overhead - fit.prefill * batch["prompt_tokens"]
                        - fit.context * batch_context)
            decode_full = min(max(decoding / batch["output_tokens"], 0.0), fit.decode)
        return calibration_of(fit, decode_full, speed.full_batch_jobs)

    def calibration_of(fit: AloneFit, decode_full: float, full_batch_jobs: int
                       ) -> Calibration:
        return Calibration(
            model=engine.model_name, request_overhead_s=seconds_decimal(fit.overhead),
            prefill_s_per_token=seconds_decimal(fit.prefill),
            decode_s_per_token_bs1=seconds_decimal(fit.decode),
            decode_s_per_token_full=seconds_decimal(decode_full),
            full_batch_jobs=full_batch_jobs,
            decode_s_per_context_token=seconds_decimal(fit.context))

    rounds = []
    for number in range(1, args.rounds + 1):
        print(f"round {number}: calibration probe", file=sys.stderr, flush=True)
        started = time.perf_counter()
        speed = run_probe(engine, settings, repeats=args.probe_repeats)
        probe_seconds = time.perf_counter() - started
        print(f"round {number}: {len(jobs)} jobs the naive way", file=sys.stderr, flush=True)
        calibration = calibration_of(
            AloneFit(speed.request_overhead_s, speed.prefill_s_per_token,
                     speed.decode_s_per_token_bs1, speed.decode_s_per_context_token),
            speed.decode_s_per_token_full, speed.full_batch_jobs)
        # The same probes fitted without the context term: the model before it had one.
        flat = refit(speed, relative=True, context=False)
        plain = refit(speed)
        measured = Decimal(0)
        modelled = Decimal(0)
        modelled_plain = Decimal(0)
        modelled_flat = Decimal(0)
        errors = []
        prompt_tokens: list[int] = []
        output_tokens: list[int] = []
        for job in jobs:
            request = GenerationRequest.from_stored(str(uuid.uuid4()), job.request,
                                                    cache_salt=str(uuid.uuid4()))
            generated = engine.generate([request])
            [g] = generated.generations
            alone = calibration.alone_seconds(g.prompt_tokens - g.cached_tokens,
                                              g.output_tokens)
            real = seconds_decimal(generated.engine_seconds)
            measured += real
            modelled += alone
            modelled_plain += plain.alone_seconds(g.prompt_tokens - g.cached_tokens,
                                                  g.output_tokens)
            modelled_flat += flat.alone_seconds(g.prompt_tokens - g.cached_tokens,
                                                g.output_tokens)
            prompt_tokens.append(g.prompt_tokens)
            output_tokens.append(g.output_tokens)
            errors.append(float(alone / real) if real else 0.0)
        rounds.append((speed, probe_seconds, measured, modelled, errors, plain,
                       modelled_plain, modelled_flat, os.getloadavg()[0]))

    # Costing at record time: the pure attribution of one job (card and calibration are
    # read from the database at most once a minute per model, not per job).
    card = PriceCard(model=engine.model_name, engine_hour_usd=Decimal("0.10"), id=1)
    basis = CostBasis(card, calibration)
    sample = EngineJob(prompt_tokens=300, cached_tokens=256, output_tokens=40,
                       requested_max_tokens=64, applied_max_tokens=64, finish_reason="stop",
                       batch_jobs=24)
    n = 20_000
    started = time.perf_counter()
    for _ in range(n):
        attribute_engine_job(sample, Decimal("0.0000012345"), basis, basis).columns()
    costing_us = (time.perf_counter() - started) / n * 1e6

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    cap = f", max_tokens at most {args.max_tokens}" if args.max_tokens else ""
    source = (f"{len(jobs)} jobs sampled from {args.workload.name} (seed {args.seed}{cap})"
              if args.workload is not None else f"{len(jobs)} jobs from {args.file.name}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, load average (1 min) at "
          f"the end {load:.1f}; model {engine.model_name}, "
          f"{'compiled' if args.compiled else 'eager'}; {source}")
    print(f"tokens per job (last round): prompt {min(prompt_tokens)}-{max(prompt_tokens)}, "
          f"output {min(output_tokens)}-{max(output_tokens)} "
          f"(mean {statistics.mean(output_tokens):.0f})")
    print()
    print("| round | load 1m | probe s | overhead ms | prefill ms/tok | decode ms/tok alone | "
          "decode ms/tok per 1k context | decode ms/tok batch | measured naive s | "
          "modelled naive s | modelled/measured | fitted without the context term | "
          "per-job ratio p10-p50-p90 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for i, (speed, probe_s, measured, modelled, errors, _, _, modelled_flat,
            round_load) in enumerate(rounds, 1):
        deciles = statistics.quantiles(errors, n=10) if len(errors) > 1 else errors * 9
        print(f"| {i} | {round_load:.1f} | {probe_s:.1f} | "
              f"{speed.request_overhead_s * 1000:.1f} | "
              f"{speed.prefill_s_per_token * 1000:.3f} | "
              f"{speed.decode_s_per_token_bs1 * 1000:.2f} | "
              f"{speed.decode_s_per_context_token * 1e6:.2f} | "
              f"{speed.decode_s_per_token_full * 1000:.2f} | {measured:.2f} | "
              f"{modelled:.2f} | {modelled / measured:.3f} | {modelled_flat / measured:.3f} | "
              f"{deciles[0]:.2f}-{statistics.median(errors):.2f}-{deciles[-1]:.2f} |")
    print()
    print("The same probes fitted by plain least squares (`fit_alone(relative=False)`):")
    print()
    print("| round | overhead ms | prefill ms/tok | decode ms/tok alone | "
          "decode ms/tok per 1k context | decode ms/tok batch | "
          "measured naive s | modelled naive s | modelled/measured |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, (_, _, measured, _, _, alt, modelled_alt, *_) in enumerate(rounds, 1):
        print(f"| {i} | {alt.request_overhead_s * 1000:.1f} | "
              f"{alt.prefill_s_per_token * 1000:.3f} | "
              f"{alt.decode_s_per_token_bs1 * 1000:.2f} | "
              f"{alt.decode_s_per_context_token * 1000000:.2f} | "
              f"{alt.decode_s_per_token_full * 1000:.2f} | {measured:.2f} | "
              f"{modelled_alt:.2f} | {modelled_alt / measured:.3f} |")
    print()
    print(f"costing at record time: {costing_us:.1f} µs per job (pure attribution)")


if __name__ == "__main__":
    main()
