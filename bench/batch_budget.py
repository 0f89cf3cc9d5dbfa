"""Does the batch token budget cost engine time on the headline workload? One day's
distinct requests planned by the coalescer under each `max_batch_tokens` budget and each way
of counting it, each plan run on the same engine (one generate() call per planned batch, in
order), alternating, engine seconds side by side.

    .venv/bin/python bench/batch_budget.py [--items 400] [--day 0] [--budgets 65536]
                                           [--counts prompt,requested] [--repeat 1]
                                           [--limit 0]

`prompt` is what penny counts: each job's prompt tokens, a shared prefix once. `requested`
is what it counted before: the prompt plus the requested max_tokens. With generous
max_tokens that cuts a day's work into several calls, and each call runs as long as its
longest answer: answers that loop to max_tokens keep a small batch busy for hundreds of
steps per call. This measures what that costs here.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from naive_runner import machine  # noqa: E402
from workload import Item, generate  # noqa: E402


def plan(items: list[Item], engine: Any, budget: int, count: str) -> list[list[Item]]:
    """The coalescer's batches for `items` queued in one window under `budget`, counting
    prompts only (`prompt`) or prompts plus requested max_tokens (`requested`)."""
    from coalescer.planning import BatchLimits, PlanOptions, QueuedJob, plan_window
    from penny.settings import Settings
    from workers.engine import GenerationRequest, Sampling

    now = datetime.now(UTC)
    by_id = {i.id: i for i in items}
    jobs = []
    for item in items:
        request = GenerationRequest(key=item.id, sampling=Sampling(max_tokens=item.max_tokens),
                                    messages=tuple((m["role"], m["content"])
                                                   for m in item.messages))
        ids = engine.prompt_token_ids(request)
        jobs.append(QueuedJob(id=item.id, model="m", estimated_tokens=len(ids) + item.max_tokens,
                              priority=0, created_at=now,
                              single_flight_key=json.dumps([item.messages, item.max_tokens]),
                              prompt_tokens=tuple(ids),
                              output_tokens=item.max_tokens if count == "prompt" else 0))
    settings = Settings()
    window = plan_window(jobs, PlanOptions(limits=BatchLimits(settings.max_batch_jobs, budget),
                                           now=now))
    return [[by_id[j] for j in batch.job_ids] for batch in window.batches]


def run_plan(engine: Any, batches: list[list[Item]]) -> tuple[float, int]:
    from workers.engine import GenerationRequest, Sampling

    seconds, output = 0.0, 0
    for batch in batches:
        requests = [GenerationRequest(key=i.id, sampling=Sampling(max_tokens=i.max_tokens),
                                      messages=tuple((m["role"], m["content"])
                                                     for m in i.messages))
                    for i in batch]
        result = engine.generate(requests)
        seconds += result.engine_seconds
        output += sum(g.output_tokens for g in result.generations)
    return seconds, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--day", type=int, default=0)
    parser.add_argument("--budgets", default="65536")
    parser.add_argument("--counts", default="prompt,requested",
                        help="what the budget counts: prompt, requested (prompt + max_tokens)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0, help="first N distinct requests only")
    args = parser.parse_args()

    from penny.settings import Settings
    from workers.vllm_engine import VllmEngine

    settings = Settings()
    engine = VllmEngine(settings, settings.default_model)
    day = [i for i in generate(args.items, args.seed) if i.day == args.day]
    distinct = list({json.dumps([i.messages, i.max_tokens]): i for i in day}.values())
    if args.limit:
        distinct = distinct[:args.limit]
    arms = [(int(b), c) for b in args.budgets.split(",") for c in args.counts.split(",")]
    plans = {arm: plan(distinct, engine, *arm) for arm in arms}
    measured: dict[tuple[int, str], list[tuple[float, int]]] = {arm: [] for arm in arms}
    for _ in range(args.repeat):
        for arm in arms:
            # Each run starts with a cold prefix cache, as a fresh day would not; equal for
            # every plan.
            engine.llm.reset_prefix_cache()
            box: list[tuple[float, int]] = []
            worker = threading.Thread(target=lambda a=arm, out=box: out.append(
                run_plan(engine, plans[a])))
            worker.start()
            worker.join()
            measured[arm].append(box[0])
            time.sleep(1)
    print(f"day {args.day} of the {args.items}-item workload: {len(day)} requests, "
          f"{len(distinct)} distinct, run once each per plan")
    print(f"{'max_batch_tokens':>18}{'counts':>11}{'batches (jobs)':>24}{'engine s':>12}"
          f"{'output tok':>12}{'vs first':>10}")
    first = min(s for s, _ in measured[arms[0]])
    for arm in arms:
        seconds = min(s for s, _ in measured[arm])
        sizes = ",".join(str(len(b)) for b in plans[arm])
        print(f"{arm[0]:>18}{arm[1]:>11}{sizes:>24}{seconds:>12.1f}{measured[arm][0][1]:>12}"
              f"{seconds / first:>9.2f}x")
    print(f"command: {' '.join(sys.argv)}\nmachine: {machine()}")


if __name__ == "__main__":
    main()
