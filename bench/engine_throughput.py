"""Engine output tokens/s inside penny vs calling `LLM.generate` directly, same prompts,
same engine, same process, one run. Prints a table of ratios and how it was measured.

    .venv/bin/python bench/engine_throughput.py [--jobs 64] [--max-tokens 48] [--compiled]

Uses the embedded Postgres under PENNY_DATA_DIR (default var/bench) unless
PENNY_DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SYSTEM = (
    "You are the concise assistant of a travel company. Answer in one or two short "
    "sentences of plain English, without lists or markdown. Prefer concrete facts over "
    "general advice, and say so briefly when you are not sure. "
) * 4
PLACES = ["France", "Japan", "Italy", "Spain", "Peru", "Kenya", "Chile", "Norway", "Greece",
          "India", "Brazil", "Mexico", "Poland", "Cuba", "Nepal", "Egypt"]


def conversations(count: int) -> list[list[dict[str, str]]]:
    return [
        [{"role": "system", "content": SYSTEM},
         {"role": "user", "content": f"Suggest one thing to see in {PLACES[i % len(PLACES)]} "
                                     f"for traveller number {i}."}]
        for i in range(count)
    ]


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, "
            f"Python {platform.python_version()}, {platform.system()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--compiled", action="store_true", help="vLLM with compilation")
    args = parser.parse_args()
    os.environ.setdefault("PENNY_DATA_DIR", str(REPO / "var" / "bench"))
    os.environ.setdefault("PENNY_MODELS_DIR", str(REPO / "var" / "models"))

    from sqlalchemy import func, select
    from vllm import SamplingParams

    from intake.limits import IntakeLimits
    from intake.schema import JobRequest
    from intake.service import jobs_for_requests, request_hash, submit
    from models.tables import LedgerEntry
    from penny.runtime import open_runtime
    from penny.settings import Settings
    from workers.inprocess import InProcessPipeline
    from workers.vllm_engine import VllmEngine

    settings = Settings(engine_enforce_eager=not args.compiled,
                        max_batch_jobs=max(64, args.jobs))
    engine = VllmEngine(settings, settings.default_model)
    convs = conversations(args.jobs)
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=False)

    engine.llm.chat(convs[:2], params, use_tqdm=False)  # warm-up, not measured
    engine.llm.reset_prefix_cache()
    started = time.perf_counter()
    direct = engine.llm.chat(convs, params, use_tqdm=False)
    direct_seconds = time.perf_counter() - started
    direct_tokens = sum(len(o.outputs[0].token_ids) for o in direct)
    engine.llm.reset_prefix_cache()

    runtime = open_runtime(settings)
    limits = IntakeLimits.from_settings(settings)
    requests = [JobRequest.model_validate({"messages": c, "max_tokens": args.max_tokens})
                for c in convs]
    jobs = jobs_for_requests(requests, limits)
    started = time.perf_counter()
    with runtime.sessions() as session:
        stored = submit(session, tenant="bench", kind="bulk", jobs=jobs,
                        payload_hash=request_hash([time.time_ns()]), cache=None)
    with InProcessPipeline(runtime, [engine]):
        while True:
            with runtime.sessions() as session:
                done = session.execute(
                    select(func.count()).select_from(LedgerEntry)
                    .where(LedgerEntry.submission_id == stored.submission.id)
                ).scalar_one()
            if done == args.jobs:
                break
            time.sleep(0.5)  # seldom: the bench's own queries would slow the engine
    penny_wall = time.perf_counter() - started
    with runtime.sessions() as session:
        penny_tokens, penny_engine = session.execute(
            select(func.sum(LedgerEntry.output_tokens), func.sum(LedgerEntry.engine_seconds))
            .where(LedgerEntry.submission_id == stored.submission.id)
        ).one()
        batches = session.execute(
            select(func.count(func.distinct(LedgerEntry.batch_id)))
            .where(LedgerEntry.submission_id == stored.submission.id)
        ).scalar_one()
    runtime.close()

    direct_rate = direct_tokens / direct_seconds
    penny_engine_rate = penny_tokens / penny_engine
    penny_wall_rate = penny_tokens / penny_wall
    print()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {machine()}")
    print(f"workload: {args.jobs} chat jobs sharing a system prompt, greedy, "
          f"max_tokens={args.max_tokens}, {'compiled' if args.compiled else 'eager'} vLLM-CPU, "
          f"model {settings.default_model}")
    print()
    print(f"| {'measure':<44} | {'value':>10} | {'ratio':>7} |")
    print(f"|{'-' * 46}|{'-' * 12}|{'-' * 9}|")
    rows = [
        ("direct LLM.chat: output tokens/s (wall)", direct_rate, 1.0),
        ("penny: output tokens/s (engine seconds)", penny_engine_rate,
         penny_engine_rate / direct_rate),
        ("penny: output tokens/s (submit to done)", penny_wall_rate,
         penny_wall_rate / direct_rate),
    ]
    for name, value, ratio in rows:
        print(f"| {name:<44} | {value:>10.1f} | {ratio:>6.2f}x |")
    print(f"| {'direct: output tokens / seconds':<44} | {direct_tokens:>5} / "
          f"{direct_seconds:<4.1f}|{'':>9}|")
    print(f"| {'penny: output tokens / engine s / wall s':<44} | {penny_tokens:>4} / "
          f"{penny_engine:.1f} / {penny_wall:.1f} | {batches} batch(es) |")


if __name__ == "__main__":
    main()
