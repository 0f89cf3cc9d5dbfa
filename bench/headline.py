"""The headline comparison: the same workload the naive way and through penny, side by side.

    .venv/bin/python bench/workload.py --items 400
    .venv/bin/python bench/naive_runner.py --sample 60
    .venv/bin/python bench/headline.py [--workload var/bench/workload.jsonl]
                                       [--naive var/bench/naive.json] [--port 8765]

The penny side runs `penny up` (embedded Postgres, everything at its defaults) on a fresh
data directory, calibrates the model first (the ledger's counterfactual needs it), and sends
the workload through the public API as a client would: each burst of arrivals as one
`POST /v1/jobs/bulk` tagged with its feature, client retries as single `POST /v1/jobs`
sent again, and one day's work finished before the next day's starts (so repeats on a later
day meet the result cache, not only single-flight). Answers are scored with the same checks
as the naive run. The naive side is read from `bench/naive_runner.py`'s output (a sample,
scaled to the whole workload; the table says so).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from naive_runner import machine  # noqa: E402
from workload import Item, read, score  # noqa: E402

PENNY = str(REPO / ".venv" / "bin" / "penny")
BURST_GAP_SECONDS = 2.0  # arrivals closer than this go out in one bulk request


def bursts(items: list[Item]) -> list[list[Item]]:
    groups: list[list[Item]] = []
    for item in sorted(items, key=lambda i: i.at):
        if groups and item.at - groups[-1][-1].at < BURST_GAP_SECONDS:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def job_body(item: Item) -> dict[str, Any]:
    return {"messages": item.messages, "max_tokens": item.max_tokens, "custom_id": item.id,
            "metadata": {"feature": item.feature, "difficulty": item.difficulty}}


class Penny:
    """`penny up` on a fresh data directory, and a client for it."""

    def __init__(self, data_dir: Path, port: int) -> None:
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        self.env = {**os.environ, "PENNY_DATA_DIR": str(data_dir),
                    "PENNY_MODELS_DIR": str(REPO / "var" / "models")}
        self.log = (data_dir / "penny-up.log").open("w")
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)

    def calibrate(self, model: str) -> None:
        subprocess.run([PENNY, "calibrate", model], env=self.env, check=True,
                       stdout=self.log, stderr=subprocess.STDOUT)

    def start(self) -> None:
        self.process = subprocess.Popen([PENNY, "up", "--port", str(self.port)], env=self.env,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError("penny up exited; see its log")
            time.sleep(1)
        raise TimeoutError("penny up did not become ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=120)

    def bulk(self, items: list[Item]) -> str:
        reply = self.client.post("/v1/jobs/bulk", json={"jobs": [job_body(i) for i in items]})
        reply.raise_for_status()
        return str(reply.json()["submission_id"])

    def single(self, item: Item) -> str:
        reply = self.client.post("/v1/jobs", json=job_body(item))
        reply.raise_for_status()
        return str(reply.json()["submission_id"])

    def wait(self, submissions: list[str]) -> None:
        for submission in submissions:
            while self.client.get(f"/v1/submissions/{submission}").json()["status"] != \
                    "completed":
                time.sleep(1)

    def output(self, submission: str, name: str) -> bytes:
        reply = self.client.get(f"/v1/submissions/{submission}/{name}")
        reply.raise_for_status()
        return reply.content


def run_penny(penny: Penny, workload: list[Item]) -> tuple[list[str], float]:
    submissions: list[str] = []
    started = time.perf_counter()
    by_day: dict[int, list[Item]] = defaultdict(list)
    for item in workload:
        by_day[item.day].append(item)
    for day in sorted(by_day):
        sent: list[str] = []
        arrivals = [i for i in by_day[day] if i.retry_of is None]
        retries = [i for i in by_day[day] if i.retry_of is not None]
        for burst in bursts(arrivals):
            sent.append(penny.bulk(burst))
        sent.extend(penny.single(item) for item in retries)
        penny.wait(sent)
        submissions.extend(sent)
    return submissions, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", type=Path,
                        default=REPO / "var" / "bench" / "workload.jsonl")
    parser.add_argument("--naive", type=Path, default=REPO / "var" / "bench" / "naive.json")
    parser.add_argument("--data-dir", type=Path, default=REPO / "var" / "bench" / "headline")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()

    workload = list(read(args.workload))
    items = {i.id: i for i in workload}
    naive = json.loads(args.naive.read_text())
    penny = Penny(args.data_dir, args.port)
    try:
        penny.calibrate(args.model)
        penny.start()
        submissions, wall = run_penny(penny, workload)
        entries: list[dict[str, Any]] = []
        correct = answered = 0
        savings: dict[str, Decimal] = defaultdict(Decimal)
        unexplained = Decimal(0)
        for submission in submissions:
            ledger = json.loads(penny.output(submission, "ledger_json"))
            entries.extend(ledger["entries"])
            for mechanism, usd in ledger["totals"]["savings_by_mechanism_usd"].items():
                savings[mechanism] += Decimal(usd)
            unexplained += Decimal(ledger["totals"]["unexplained_usd"])
            for line in penny.output(submission, "results").decode().splitlines():
                result = json.loads(line)
                item = items[result["custom_id"]]
                answered += 1
                if result["response"] and score(item.check, result["response"]["text"]):
                    correct += 1
    finally:
        penny.stop()

    ran = [e for e in entries if e["served_by"] == "engine"]
    penny_engine = sum(float(e["engine_seconds"]) for e in entries)
    penny_prompt = sum(int(e["input_tokens"]) - int(e["cached_tokens"]) for e in ran)
    penny_output = sum(int(e["output_tokens"]) for e in ran)
    penny_cost = sum((Decimal(e["cost_usd"]) for e in entries), Decimal(0))
    modelled_naive = sum((Decimal(e["naive_cost_usd"]) for e in entries), Decimal(0))
    penny_quality = correct / answered

    scale = float(naive["scale"])
    results = naive["results"]
    naive_engine = sum(r["engine_seconds"] for r in results) * scale
    naive_prompt = sum(r["prompt_tokens"] - r["cached_tokens"] for r in results) * scale
    naive_output = sum(r["output_tokens"] for r in results) * scale
    naive_cost = Decimal(naive["estimated_cost_usd"])
    naive_quality = sum(1 for r in results if r["correct"]) / len(results)

    def per_correct(cost: Decimal, quality: float) -> str:
        return f"{cost / Decimal(quality * len(workload)):.8f}" if quality else "-"

    print(f"workload: {len(workload)} requests ({args.workload}); naive: {naive['sample']} "
          f"run alone, scaled x{scale:.2f}; penny: {len(submissions)} submissions, "
          f"{wall:.0f} s wall")
    print(f"{'':34}{'naive':>16}{'penny':>16}{'penny / naive':>15}")
    rows = [("engine seconds", naive_engine, penny_engine),
            ("prompt tokens computed", naive_prompt, penny_prompt),
            ("output tokens generated", naive_output, penny_output),
            ("cost by the price card (USD)", float(naive_cost), float(penny_cost))]
    for label, n, p in rows:
        print(f"{label:34}{n:>16,.4f}{p:>16,.4f}{(p / n if n else 0):>14.3f}x")
    print(f"{'quality (share correct)':34}{naive_quality:>16.3f}{penny_quality:>16.3f}"
          f"{(penny_quality / naive_quality if naive_quality else 0):>14.3f}x")
    print(f"{'cost per correct answer (USD)':34}{per_correct(naive_cost, naive_quality):>16}"
          f"{per_correct(penny_cost, penny_quality):>16}")
    print(f"\nthe ledger's modelled naive cost: {modelled_naive:.6f} USD "
          f"(measured naive, scaled: {naive_cost:.6f})")
    print("penny's savings vs naive by mechanism (the ledger):")
    for mechanism, usd in sorted(savings.items(), key=lambda kv: -kv[1]):
        print(f"  {mechanism:20}{usd:>14.6f}")
    print(f"  {'unexplained':20}{unexplained:>14.6f}   (what the cost model does not explain)")
    print(f"command: {' '.join(sys.argv)}\nmachine: {machine()}")


if __name__ == "__main__":
    main()
