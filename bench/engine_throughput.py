"""Engine output tokens/s inside penny vs calling `LLM.chat` directly, same prompts, same
engine, same process, both driven from a thread other than the main one, alternating runs.
Prints a table of median ratios, where penny's engine sat idle, and how it was measured.

    .venv/bin/python bench/engine_throughput.py [--jobs 64] [--max-tokens 48] [--compiled]
                                                [--repeat 3] [--logprobs]

Uses the embedded Postgres under PENNY_DATA_DIR (default var/bench) unless
PENNY_DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
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


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--compiled", action="store_true", help="vLLM with compilation")
    parser.add_argument("--repeat", type=int, default=3,
                        help="direct and penny runs, alternating; the table shows medians")
    parser.add_argument("--logprobs", action="store_true",
                        help="penny's jobs ask for logprobs (mean_logprob), as every job did")
    args = parser.parse_args()
    os.environ.setdefault("PENNY_DATA_DIR", str(REPO / "var" / "bench"))
    os.environ.setdefault("PENNY_MODELS_DIR", str(REPO / "var" / "models"))

    from sqlalchemy import func, select
    from timed_engine import TimedEngine, Timeline
    from vllm import SamplingParams

    from intake.limits import IntakeLimits
    from intake.schema import JobRequest
    from intake.service import jobs_for_requests, request_hash, submit
    from models.tables import LedgerEntry
    from models.tenants import ensure_tenant
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
    runtime = open_runtime(settings)
    limits = IntakeLimits.from_settings(settings)
    asked = {"logprobs": True} if args.logprobs else {}
    requests = [JobRequest.model_validate({"messages": c, "max_tokens": args.max_tokens,
                                           **asked}) for c in convs]

    def run_direct() -> tuple[int, float]:
        engine.llm.reset_prefix_cache()
        measured: list[tuple[int, float]] = []

        def call() -> None:
            started = time.perf_counter()
            direct = engine.llm.chat(convs, params, use_tqdm=False)
            seconds = time.perf_counter() - started
            measured.append((sum(len(o.outputs[0].token_ids) for o in direct), seconds))

        # On a thread of its own, as penny's worker drives the engine: on a loaded machine
        # the very same call from the main thread ran 2.5-17x slower, and slower each time.
        thread = threading.Thread(target=call)
        thread.start()
        thread.join()
        return measured[0]

    def run_penny() -> tuple[int, float, int, Timeline]:
        engine.llm.reset_prefix_cache()
        timed = TimedEngine(engine)
        jobs = jobs_for_requests(requests, limits)
        started = time.perf_counter()
        with runtime.sessions() as session:
            stored = submit(session, tenant=ensure_tenant(session, "bench"), kind="bulk",
                            jobs=jobs, payload_hash=request_hash([time.time_ns()]))
        mine = LedgerEntry.submission_id == stored.submission.id

        def done() -> bool:
            with runtime.sessions() as session:
                return bool(session.execute(select(func.count()).select_from(LedgerEntry)
                                            .where(mine)).scalar_one() == args.jobs)

        stop_counting = timed.count_queries(runtime.db)
        with InProcessPipeline(runtime, [timed]):
            # Looks only while the engine is idle: the bench's own queries are not penny's.
            finished = timed.wait_until(done)
        stop_counting()
        with runtime.sessions() as session:
            tokens, engine_seconds, batches = session.execute(
                select(func.sum(LedgerEntry.output_tokens), func.sum(LedgerEntry.engine_seconds),
                       func.count(func.distinct(LedgerEntry.batch_id))).where(mine)).one()
        timeline = timed.timeline(started, finished)
        return int(tokens), float(engine_seconds), int(batches), timeline

    rows = []
    for repetition in range(args.repeat):
        direct_tokens, direct_seconds = run_direct()
        tokens, engine_seconds, batches, timeline = run_penny()
        rows.append((direct_tokens, direct_seconds, tokens, engine_seconds, batches, timeline))
        print(f"run {repetition + 1}: direct {direct_tokens} tok / {direct_seconds:.2f} s; "
              f"penny {tokens} tok / {engine_seconds:.2f} engine s / "
              f"{timeline.wall_seconds:.2f} wall s, {batches} batch(es), idle "
              f"{timeline.before_first:.2f} s before, {timeline.between:.2f} s between, "
              f"{timeline.after_last:.2f} s after; {timeline.queries_beside} queries while "
              f"the engine ran", flush=True)
    runtime.close()

    direct_rate = median([r[0] / r[1] for r in rows])
    engine_rate = median([r[2] / r[3] for r in rows])
    wall_rate = median([r[2] / r[5].wall_seconds for r in rows])
    # Ratios per run, then the median: each run's penny is measured beside its own direct.
    engine_ratio = median([(r[2] / r[3]) / (r[0] / r[1]) for r in rows])
    wall_ratio = median([(r[2] / r[5].wall_seconds) / (r[0] / r[1]) for r in rows])
    busy = median([r[5].busy_fraction for r in rows])
    print()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {machine()}")
    print(f"workload: {args.jobs} chat jobs sharing a system prompt, greedy, "
          f"max_tokens={args.max_tokens}, {'compiled' if args.compiled else 'eager'} vLLM-CPU, "
          f"model {settings.default_model}, logprobs {'on' if args.logprobs else 'off'}; "
          f"medians of {args.repeat} alternating runs")
    print()
    print(f"| {'measure':<44} | {'value':>10} | {'ratio':>7} |")
    print(f"|{'-' * 46}|{'-' * 12}|{'-' * 9}|")
    table = [
        ("direct LLM.chat: output tokens/s (wall)", direct_rate, 1.0),
        ("penny: output tokens/s (engine seconds)", engine_rate, engine_ratio),
        ("penny: output tokens/s (submit to done)", wall_rate, wall_ratio),
        ("engine busy: engine s / wall s, direct", 1.0, 1.0),
        ("engine busy: engine s / wall s, penny", busy, busy),
    ]
    for name, value, ratio in table:
        print(f"| {name:<44} | {value:>10.2f} | {ratio:>6.2f}x |")
    idle = [median([getattr(r[5], f) for r in rows])
            for f in ("before_first", "between", "after_last")]
    print(f"| {'penny: engine idle before / between / after':<44} | "
          f"{idle[0]:.2f} / {idle[1]:.2f} / {idle[2]:.2f} s |{'':>9}|")
    queries = median([r[5].queries_beside / r[5].engine_seconds for r in rows])
    print(f"| {'penny: SQL statements per engine second':<44} | {queries:>10.1f} |{'':>9}|")


if __name__ == "__main__":
    main()
