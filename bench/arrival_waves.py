"""Does the batch that waits for a busy engine take later arrivals? Jobs arrive in waves
while the engine runs the first: penny as it is (the waiting batch grows until the worker
takes it) and with `grow_waiting_batches` off (arrivals after the waiting batch was planned
wait for a call after it), alternating on one engine, side by side in one run.

    .venv/bin/python bench/arrival_waves.py [--waves 32,8,16] [--max-tokens 48]
                                            [--gap 1.0] [--repeat 3]

Wave 1 is submitted, wave 2 as soon as the engine runs wave 1 (the next batch is planned
from it while the engine runs), each later wave `--gap` seconds after that batch was
planned, all while the first call runs. Every job is distinct (no copies to collapse).
Uses the embedded Postgres under PENNY_DATA_DIR (default var/bench) unless
PENNY_DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from engine_throughput import conversations, machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--waves", default="32,8,16", help="jobs per wave")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--gap", type=float, default=1.0,
                        help="seconds between the later waves")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("PENNY_DATA_DIR", str(REPO / "var" / "bench"))
    os.environ.setdefault("PENNY_MODELS_DIR", str(REPO / "var" / "models"))

    from sqlalchemy import func, select, text
    from timed_engine import TimedEngine
    from vllm import SamplingParams

    from intake.limits import IntakeLimits
    from intake.schema import JobRequest
    from intake.service import jobs_for_requests, request_hash, submit
    from models.tables import LedgerEntry
    from models.tenants import ensure_tenant
    from penny.runtime import Runtime, open_runtime
    from penny.settings import Settings
    from workers.inprocess import InProcessPipeline
    from workers.vllm_engine import VllmEngine

    waves = [int(w) for w in args.waves.split(",")]
    total = sum(waves)
    settings = Settings(engine_enforce_eager=True)
    engine = VllmEngine(settings, settings.default_model)
    convs = conversations(total)
    engine.llm.chat(convs[:2], SamplingParams(temperature=0, max_tokens=4),
                    use_tqdm=False)  # warm-up, not measured
    requests = [JobRequest.model_validate({"messages": c, "max_tokens": args.max_tokens})
                for c in convs]

    def send(runtime: Runtime, first: int, count: int) -> None:
        jobs = jobs_for_requests(requests[first:first + count],
                                 IntakeLimits.from_settings(runtime.settings))
        with runtime.sessions() as session:
            submit(session, tenant=ensure_tenant(session, "bench"), kind="bulk", jobs=jobs,
                   payload_hash=request_hash([time.time_ns()]))

    def run(grow: bool) -> tuple[list[int], float, float, int]:
        runtime = open_runtime(Settings(engine_enforce_eager=True, grow_waiting_batches=grow))
        with runtime.db.begin() as conn:
            conn.execute(text("TRUNCATE ledger_entries, results, jobs, batches, submissions "
                              "CASCADE"))
        engine.llm.reset_prefix_cache()
        timed = TimedEngine(engine)

        def done() -> bool:
            with runtime.sessions() as session:
                return bool(session.execute(select(func.count()).select_from(LedgerEntry))
                            .scalar_one() == total)

        with InProcessPipeline(runtime, [timed]) as pipeline:
            doorbells = pipeline.dispatcher.queues[engine.model_name]
            started = time.perf_counter()
            send(runtime, 0, waves[0])
            while not timed.busy:  # wave 1 is on the engine
                time.sleep(0.01)
            sent = waves[0]
            for index, count in enumerate(waves[1:]):
                if index:
                    # The next batch is planned and waits for the engine: what comes now
                    # arrived after it was planned.
                    deadline = time.monotonic() + 60
                    while doorbells.empty() and time.monotonic() < deadline:
                        time.sleep(0.01)
                    time.sleep(args.gap)
                send(runtime, sent, count)
                sent += count
            finished = timed.wait_until(done)
        with runtime.sessions() as session:
            tokens = int(session.execute(select(func.sum(LedgerEntry.output_tokens)))
                         .scalar_one())
        runtime.close()
        timeline = timed.timeline(started, finished)
        return ([c.requests for c in timed.calls], timeline.engine_seconds,
                timeline.wall_seconds, tokens)

    rows: dict[bool, list[tuple[list[int], float, float, int]]] = {True: [], False: []}
    for repetition in range(args.repeat):
        for grow in (True, False):
            row = run(grow)
            rows[grow].append(row)
            print(f"run {repetition + 1}, growing {'on' if grow else 'off'}: calls "
                  f"{row[0]}, {row[1]:.2f} engine s, {row[2]:.2f} wall s, {row[3]} output "
                  f"tokens", file=sys.stderr, flush=True)

    print(f"\ncommand: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {machine()}")
    print(f"workload: {total} distinct chat jobs sharing a system prompt in waves of "
          f"{args.waves} (later waves {args.gap} s after the waiting batch was planned, "
          f"while the first call runs), "
          f"greedy, max_tokens={args.max_tokens}, eager vLLM-CPU; medians of {args.repeat} "
          f"alternating runs\n")
    print("| waiting batch | engine calls (jobs each) | engine s | wall s | x faster than off |")
    print("|---|---|---:|---:|---:|")
    for grow in (True, False):
        runs = rows[grow]
        median_run = sorted(runs, key=lambda r: r[2])[len(runs) // 2]
        # Each repetition's ratio against the "off" run beside it, then the median.
        ratio = statistics.median(off[2] / run_[2] for run_, off in zip(runs, rows[False],
                                                                          strict=True))
        print(f"| {'takes arrivals (default)' if grow else 'planned once (off)'} | "
              f"{len(median_run[0])} ({', '.join(map(str, median_run[0]))}) | "
              f"{statistics.median(r[1] for r in runs):.1f} | "
              f"{statistics.median(r[2] for r in runs):.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
