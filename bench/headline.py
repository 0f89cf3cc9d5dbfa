"""The headline comparison: the same workload the naive way and through penny, side by side.

    .venv/bin/python bench/workload.py --items 400
    .venv/bin/python bench/naive_runner.py --sample 30
    .venv/bin/python bench/headline.py [--workload var/bench/workload.jsonl]
                                       [--naive var/bench/naive.json] [--port 8765]
                                       [--output-dir var/bench]

The penny side runs `penny up` (embedded Postgres) on a fresh data directory, calibrates the
model first (the ledger's counterfactual needs it), and sends the workload through the public
API as a client would: each burst of arrivals as one `POST /v1/jobs/bulk` tagged with its
feature; the back-office features (ticket classification and extraction) as one OpenAI batch
file per feature a day, through the official `openai` SDK (`/v1/files` + `/v1/batches`),
the batch's metadata naming its feature; client retries as single `POST /v1/jobs` sent
again; and one day's work finished before the next day's starts (so repeats on a later day
meet the result cache, not only single-flight). Every request asks for the workload's own
max_tokens.

It does so twice, one `penny up` after the other on the same data directory (one
calibration and one price card for both; the result caches emptied before each):

- "penny": everything at its defaults.
- "penny tuned": what a team turns on where it fits: the semantic cache for the FAQ feature
  (`cache: "semantic"`, `penny_cache` on batch lines) and a max_tokens cap per feature,
  set for the tenant through `PUT /v1/max-tokens-caps` before its work is sent. Intake
  lowers each job's max_tokens to its feature's cap and keeps what it asked for, so the
  ledger prices the naive way at the requested max_tokens and what the caps saved is its
  own `output_limit` column.

Each run first sets its own caps (none for "penny") and removes any other, since the runs
share one database.

Answers are scored with the same checks as the naive run. Cost, tokens and savings by
mechanism come from each submission's `ledger.json`. The naive side is read from
`bench/naive_runner.py`'s output (a sample, scaled to the whole workload; the table says so).
Writes `headline.json` (the numbers) and `headline.svg` (cost and quality side by side) to
`--output-dir`.
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from headline_plot import Bar, write_svg  # noqa: E402
from naive_runner import machine  # noqa: E402
from workload import Item, read, score  # noqa: E402

PENNY = str(Path(sys.executable).parent / "penny")
BURST_GAP_SECONDS = 2.0  # arrivals closer than this go out in one bulk request
# Work no user waits on, sent as a nightly OpenAI batch file; the rest goes out as bulk.
BATCH_FILE_FEATURES = frozenset({"classify", "extract"})
BATCH_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})

# "penny tuned": the semantic cache where questions repeat in other words, and a max_tokens
# cap per feature where the workload asks for 256-1,024. The caps are what a max_tokens audit
# recommends (p99 of the output tokens of answers that ended by themselves, times ~1.3,
# rounded up to 16), taken from a development run of this workload: FAQ answers that end
# by themselves used 13-80 tokens, classifications 19-51, extractions ~17, the arithmetic
# ~190. What they cut is the answers that loop until max_tokens.
SEMANTIC_FEATURES = frozenset({"faq"})
MAX_TOKENS_CAPS = {"faq": 112, "classify": 64, "summarize": 96, "extract": 64,
                   "reasoning": 256}


@dataclass(frozen=True)
class Variant:
    """One way of sending the workload to penny."""

    name: str
    semantic_features: frozenset[str] = frozenset()
    # The tenant's max_tokens cap per feature, set through the API before the run.
    caps: Mapping[str, int] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {"PENNY_SEMANTIC_CACHE": "true"} if self.semantic_features else {}

    def semantic(self, item: Item) -> bool:
        return item.feature in self.semantic_features

    def job_body(self, item: Item) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": item.messages, "max_tokens": item.max_tokens,
            "custom_id": item.id,
            "metadata": {"feature": item.feature, "difficulty": item.difficulty}}
        if self.semantic(item):
            body["cache"] = "semantic"
        return body

    def batch_line(self, item: Item) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": item.messages, "max_tokens": item.max_tokens}
        if self.semantic(item):
            body["penny_cache"] = "semantic"
        return {"custom_id": item.id, "method": "POST", "url": "/v1/chat/completions",
                "body": body}


DEFAULTS = Variant("penny")
TUNED = Variant("penny tuned", SEMANTIC_FEATURES, MAX_TOKENS_CAPS)


def bursts(items: list[Item]) -> list[list[Item]]:
    groups: list[list[Item]] = []
    for item in sorted(items, key=lambda i: i.at):
        if groups and item.at - groups[-1][-1].at < BURST_GAP_SECONDS:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


class Penny:
    """`penny up` on a fresh data directory, and clients for it (httpx and the openai SDK)."""

    def __init__(self, data_dir: Path, port: int) -> None:
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        self.data_dir = data_dir
        self.env = {**os.environ, "PENNY_DATA_DIR": str(data_dir),
                    "PENNY_MODELS_DIR": os.environ.get("PENNY_MODELS_DIR",
                                                       str(REPO / "var" / "models")),
                    # penny up imports this checkout's code, whatever is installed.
                    "PYTHONPATH": os.pathsep.join(
                        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        self.log = (data_dir / "penny.log").open("w")
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        base = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=base, timeout=120)
        # No key is configured on a fresh data directory: any key is accepted.
        self.openai = OpenAI(base_url=f"{base}/v1", api_key="no-key-needed", max_retries=0)

    def calibrate(self, model: str) -> None:
        subprocess.run([PENNY, "calibrate", model], env=self.env, check=True,
                       stdout=self.log, stderr=subprocess.STDOUT)

    def start(self, env: Mapping[str, str]) -> None:
        self.process = subprocess.Popen([PENNY, "up", "--port", str(self.port)],
                                        env={**self.env, **env}, stdout=self.log,
                                        stderr=subprocess.STDOUT)
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

    def forget_answers(self) -> None:
        """Empty the result caches, so a run meets none of an earlier run's answers."""
        self.client.delete("/v1/cache/entries").raise_for_status()
        self.client.delete("/v1/cache/semantic/entries").raise_for_status()

    def set_caps(self, caps: Mapping[str, int]) -> None:
        """Make the tenant's max_tokens caps exactly `caps`."""
        listed = self.client.get("/v1/max-tokens-caps")
        listed.raise_for_status()
        for cap in listed.json()["data"]:
            if cap["feature"] not in caps:
                self.client.delete(f"/v1/max-tokens-caps/{cap['feature']}").raise_for_status()
        for feature, max_tokens in caps.items():
            self.client.put("/v1/max-tokens-caps", json={
                "feature": feature, "max_tokens": max_tokens}).raise_for_status()

    def bulk(self, bodies: list[dict[str, Any]]) -> str:
        reply = self.client.post("/v1/jobs/bulk", json={"jobs": bodies})
        reply.raise_for_status()
        return str(reply.json()["submission_id"])

    def single(self, body: dict[str, Any]) -> str:
        reply = self.client.post("/v1/jobs", json=body)
        reply.raise_for_status()
        return str(reply.json()["submission_id"])

    def batch_file(self, name: str, feature: str, lines: list[dict[str, Any]]) -> str:
        """Upload an OpenAI batch input file and start a batch on it, its metadata naming
        the feature (which tags each of its jobs); the batch id."""
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        uploaded = self.openai.files.create(file=(name, data), purpose="batch")
        batch = self.openai.batches.create(input_file_id=uploaded.id,
                                           endpoint="/v1/chat/completions",
                                           completion_window="24h",
                                           metadata={"feature": feature})
        return batch.id

    def wait(self, submissions: list[Submitted]) -> None:
        for submitted in submissions:
            if submitted.batch_id is not None:
                while self.openai.batches.retrieve(submitted.batch_id).status not in \
                        BATCH_ENDED:
                    time.sleep(1)
            while self.client.get(f"/v1/submissions/{submitted.id}").json()["status"] != \
                    "completed":
                time.sleep(1)

    def output(self, submission: str, name: str) -> bytes:
        reply = self.client.get(f"/v1/submissions/{submission}/{name}")
        reply.raise_for_status()
        return reply.content

    def answers(self, submitted: Submitted) -> list[tuple[str, str | None, str | None]]:
        """(custom_id, answer text, finish_reason) of every line, as the client reads it:
        an OpenAI batch's output file through the SDK, else the submission's results."""
        if submitted.batch_id is None:
            out = []
            for line in self.output(submitted.id, "results").decode().splitlines():
                result = json.loads(line)
                response = result["response"]
                out.append((result["custom_id"], response and response["text"],
                            response and response["finish_reason"]))
            return out
        batch = self.openai.batches.retrieve(submitted.batch_id)
        if batch.output_file_id is None:
            raise RuntimeError(f"batch {batch.id} ended {batch.status} with no output file")
        out = []
        for line in self.openai.files.content(batch.output_file_id).text.splitlines():
            result = json.loads(line)
            body = (result.get("response") or {}).get("body") or {}
            choice = (body.get("choices") or [None])[0]
            out.append((result["custom_id"], choice and choice["message"]["content"],
                        choice and choice["finish_reason"]))
        return out


@dataclass(frozen=True)
class Submitted:
    id: str  # the submission (for an OpenAI batch, its id without the prefix)
    batch_id: str | None = None  # an OpenAI batch's id as the SDK knows it


def send(penny: Penny, variant: Variant, workload: list[Item]) -> tuple[list[Submitted], float]:
    submissions: list[Submitted] = []
    started = time.perf_counter()
    by_day: dict[int, list[Item]] = defaultdict(list)
    for item in workload:
        by_day[item.day].append(item)
    for day in sorted(by_day):
        sent: list[Submitted] = []
        arrivals = [i for i in by_day[day] if i.retry_of is None]
        retries = [i for i in by_day[day] if i.retry_of is not None]
        online = [i for i in arrivals if i.feature not in BATCH_FILE_FEATURES]
        for burst in bursts(online):
            sent.append(Submitted(penny.bulk([variant.job_body(i) for i in burst])))
        for feature in sorted(BATCH_FILE_FEATURES):
            nightly = [i for i in arrivals if i.feature == feature]
            if nightly:
                batch_id = penny.batch_file(f"day-{day}-{feature}.jsonl", feature,
                                            [variant.batch_line(i) for i in nightly])
                sent.append(Submitted(batch_id.removeprefix("batch_"), batch_id))
        sent.extend(Submitted(penny.single(variant.job_body(item))) for item in retries)
        penny.wait(sent)
        submissions.extend(sent)
    return submissions, time.perf_counter() - started


@dataclass
class PennyRun:
    """What one variant's run measured, read from its ledgers and answers."""

    variant: Variant
    submissions: list[Submitted]
    wall_seconds: float
    entries: list[dict[str, Any]]
    savings: dict[str, Decimal]
    unexplained: Decimal
    # custom_id -> (correct, finish_reason)
    answers: dict[str, tuple[bool, str | None]]

    @property
    def batch_file_jobs(self) -> int:
        ids = {s.id for s in self.submissions if s.batch_id is not None}
        return sum(1 for e in self.entries if e["submission_id"] in ids)

    def engine_seconds(self) -> float:
        return sum(float(e["engine_seconds"]) for e in self.entries)

    def ran(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["served_by"] == "engine"]

    def prompt_tokens(self) -> int:
        return sum(int(e["input_tokens"]) - int(e["cached_tokens"]) for e in self.ran())

    def output_tokens(self) -> int:
        return sum(int(e["output_tokens"]) for e in self.ran())

    def cost(self) -> Decimal:
        return sum((Decimal(e["cost_usd"]) for e in self.entries), Decimal(0))

    def modelled_naive(self) -> Decimal:
        return sum((Decimal(e["naive_cost_usd"]) for e in self.entries), Decimal(0))

    def quality(self, among: frozenset[str] | None = None) -> float:
        """Share of answers correct: of every request, or of those in `among` only."""
        scored = [ok for custom_id, (ok, _) in self.answers.items()
                  if among is None or custom_id in among]
        return sum(scored) / len(scored) if scored else 0.0


def run_variant(penny: Penny, variant: Variant, workload: list[Item]) -> PennyRun:
    """`penny up` with the variant's settings on the shared data directory (one
    calibration and price card for every run), caches emptied first."""
    items = {i.id: i for i in workload}
    penny.start(variant.env())
    try:
        penny.forget_answers()
        penny.set_caps(variant.caps)
        submissions, wall = send(penny, variant, workload)
        entries: list[dict[str, Any]] = []
        savings: dict[str, Decimal] = defaultdict(Decimal)
        unexplained = Decimal(0)
        answers: dict[str, tuple[bool, str | None]] = {}
        for submitted in submissions:
            ledger = json.loads(penny.output(submitted.id, "ledger_json"))
            entries.extend({**e, "submission_id": submitted.id} for e in ledger["entries"])
            for mechanism, usd in ledger["totals"]["savings_by_mechanism_usd"].items():
                savings[mechanism] += Decimal(usd)
            unexplained += Decimal(ledger["totals"]["unexplained_usd"])
            for custom_id, text, finish in penny.answers(submitted):
                answers[custom_id] = (text is not None and score(items[custom_id].check, text),
                                      finish)
    finally:
        penny.stop()
    return PennyRun(variant, submissions, wall, entries, dict(savings), unexplained, answers)


@dataclass(frozen=True)
class Naive:
    scale: float
    sample: int
    engine_seconds: float
    prompt_tokens: float
    output_tokens: float
    cost: Decimal
    quality: float
    # The requests the sample ran: quality is only comparable on the same ones.
    ids: frozenset[str]

    @classmethod
    def read(cls, path: Path) -> Naive:
        naive = json.loads(path.read_text())
        scale, results = float(naive["scale"]), naive["results"]
        return cls(scale=scale, sample=int(naive["sample"]),
                   engine_seconds=sum(r["engine_seconds"] for r in results) * scale,
                   prompt_tokens=sum(r["prompt_tokens"] - r["cached_tokens"]
                                     for r in results) * scale,
                   output_tokens=sum(r["output_tokens"] for r in results) * scale,
                   cost=Decimal(naive["estimated_cost_usd"]),
                   quality=sum(1 for r in results if r["correct"]) / len(results),
                   ids=frozenset(r["id"] for r in results))


def per_feature(run: PennyRun, items: Mapping[str, Item]) -> list[str]:
    """Where a run's cost went, by feature: the question the savings table cannot answer."""
    by: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(Decimal))
    for entry in run.entries:
        feature = items[entry["custom_id"]].feature
        row = by[feature]
        row["jobs"] += 1
        row["ran"] += entry["served_by"] == "engine"
        row["cost"] += Decimal(entry["cost_usd"])
        row["output"] += int(entry["output_tokens"]) if entry["served_by"] == "engine" else 0
        row["length"] += run.answers.get(entry["custom_id"], (False, None))[1] == "length"
        row["correct"] += run.answers.get(entry["custom_id"], (False, None))[0]
    total = run.cost() or Decimal(1)
    lines = [f"{'  feature':14}{'jobs':>6}{'ran':>6}{'cost share':>12}{'out tok/run':>13}"
             f"{'cut at max':>12}{'correct':>9}"]
    for feature, row in sorted(by.items(), key=lambda kv: -kv[1]["cost"]):
        ran = int(row["ran"]) or 1
        lines.append(f"  {feature:12}{int(row['jobs']):>6}{int(row['ran']):>6}"
                     f"{float(row['cost'] / total):>12.1%}{int(row['output']) / ran:>13.0f}"
                     f"{int(row['length']) / int(row['jobs']):>12.0%}"
                     f"{int(row['correct']) / int(row['jobs']):>9.0%}")
    return lines


def report(naive: Naive, runs: list[PennyRun], workload: list[Item], argv: list[str]
           ) -> tuple[list[str], dict[str, Any]]:
    """The table as lines, and the same numbers as a document."""
    items = {i.id: i for i in workload}
    default = runs[0]
    width = 16
    lines = [f"workload: {len(workload)} requests; naive: {naive.sample} run alone, scaled "
             f"x{naive.scale:.2f}"]
    for run in runs:
        lines.append(f"{run.variant.name}: {len(run.submissions)} submissions "
                     f"({run.batch_file_jobs} jobs through OpenAI batch files), "
                     f"{run.wall_seconds:.0f} s wall")
    header = f"{'':32}{'naive':>{width}}" + "".join(
        f"{r.variant.name:>{width}}{'/ naive':>9}" for r in runs)
    lines += ["", header]

    def row(label: str, n: float, values: list[float], fmt: str) -> str:
        cells = "".join(f"{v:>{width}{fmt}}{(v / n if n else 0):>8.3f}x" for v in values)
        return f"{label:32}{n:>{width}{fmt}}{cells}"

    lines += [
        row("engine seconds", naive.engine_seconds, [r.engine_seconds() for r in runs], ",.1f"),
        row("prompt tokens computed", naive.prompt_tokens,
            [r.prompt_tokens() for r in runs], ",.0f"),
        row("output tokens generated", naive.output_tokens,
            [r.output_tokens() for r in runs], ",.0f"),
        row("cost by the price card (USD)", float(naive.cost),
            [float(r.cost()) for r in runs], ".4f"),
        row("quality (share correct)", naive.quality, [r.quality() for r in runs], ".3f"),
        # The naive side scored its sample only, penny every request: this row compares
        # the same requests, so it is the one quality ratio to quote.
        row(f"quality on the naive's {len(naive.ids)}", naive.quality,
            [r.quality(naive.ids) for r in runs], ".3f"),
    ]

    def per_correct(cost: Decimal, quality: float) -> str:
        return f"{cost / Decimal(quality * len(workload)):.6f}" if quality else "-"

    lines.append(f"{'cost per correct answer (USD)':32}"
                 f"{per_correct(naive.cost, naive.quality):>{width}}" + "".join(
                     f"{per_correct(r.cost(), r.quality()):>{width}}{'':9}" for r in runs))

    # Savings against the naive way at the workload's own max_tokens, by the ledgers: every
    # run asks for those (a capped job's ledger row prices the naive way at what it asked
    # for), and what the caps saved is in the `output_limit` column.
    reference = default.modelled_naive()
    modelled = ", ".join(f"{r.variant.name} {r.modelled_naive():.6f}" for r in runs)
    lines += ["", f"the ledger's modelled naive cost (USD): {modelled} "
                  f"(measured naive, scaled: {naive.cost:.6f})",
              "savings vs naive by mechanism (USD, from the ledgers):",
              f"{'':24}" + "".join(f"{r.variant.name:>{width}}" for r in runs)]
    mechanisms = sorted({m for r in runs for m in r.savings},
                        key=lambda m: -max(r.savings.get(m, Decimal(0)) for r in runs))
    for mechanism in mechanisms:
        lines.append(f"  {mechanism:22}" + "".join(
            f"{r.savings.get(mechanism, Decimal(0)):>{width}.6f}" for r in runs))
    lines.append(f"  {'unexplained':22}" + "".join(f"{r.unexplained:>{width}.6f}" for r in runs))
    totals = [sum(r.savings.values(), Decimal(0)) + r.unexplained for r in runs]
    lines.append(f"  {'= naive - cost':22}" + "".join(f"{t:>{width}.6f}" for t in totals))
    for run, total in zip(runs, totals, strict=True):
        if total != run.modelled_naive() - run.cost():
            lines.append(f"  !! {run.variant.name}: parts {total} != naive - cost "
                         f"{run.modelled_naive() - run.cost()}")
    for run in runs:
        lines += ["", f"{run.variant.name}, where the cost went:", *per_feature(run, items)]
    lines += ["", f"command: {' '.join(argv)}", f"machine: {machine()}"]
    document = {
        "workload": len(workload), "machine": machine(), "command": " ".join(argv),
        "naive": {"sample": naive.sample, "scale": naive.scale,
                  "engine_seconds": naive.engine_seconds, "cost_usd": str(naive.cost),
                  "quality": naive.quality, "modelled_usd": str(reference)},
        "penny": [{"name": r.variant.name, "engine_seconds": r.engine_seconds(),
                   "prompt_tokens": r.prompt_tokens(), "output_tokens": r.output_tokens(),
                   "cost_usd": str(r.cost()), "quality": r.quality(),
                   "quality_on_naive_sample": r.quality(naive.ids),
                   "answers": {custom_id: {"correct": ok, "finish_reason": finish}
                               for custom_id, (ok, finish) in sorted(r.answers.items())},
                   "modelled_naive_usd": str(r.modelled_naive()),
                   "savings_usd": {m: str(v) for m, v in r.savings.items()},
                   "unexplained_usd": str(r.unexplained),
                   "caps": dict(r.variant.caps),
                   "semantic_features": sorted(r.variant.semantic_features)}
                  for r in runs],
    }
    return lines, document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", type=Path,
                        default=REPO / "var" / "bench" / "workload.jsonl")
    parser.add_argument("--naive", type=Path, default=REPO / "var" / "bench" / "naive.json")
    parser.add_argument("--data-dir", type=Path, default=REPO / "var" / "bench" / "headline",
                        help="emptied first; every run shares it (and its calibration)")
    parser.add_argument("--output-dir", type=Path, default=REPO / "var" / "bench")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--variants", default="penny,tuned",
                        help="which penny runs, in order: penny (defaults), tuned")
    args = parser.parse_args()

    workload = list(read(args.workload))
    chosen = {"penny": DEFAULTS, "tuned": TUNED}
    penny = Penny(args.data_dir, args.port)
    penny.calibrate(args.model)
    runs = [run_variant(penny, chosen[name], workload) for name in args.variants.split(",")]
    while not args.naive.exists():  # the naive run may still be going
        print(f"waiting for {args.naive}", flush=True)
        time.sleep(30)
    naive = Naive.read(args.naive)
    lines, document = report(naive, runs, workload, sys.argv)
    print("\n".join(lines))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "headline.json").write_text(json.dumps(document, indent=1))
    (args.output_dir / "headline.txt").write_text("\n".join(lines) + "\n")
    write_svg(args.output_dir / "headline.svg",
              [Bar(f"naive ({naive.sample} run)", float(naive.cost), naive.quality)]
              + [Bar(r.variant.name, float(r.cost()), r.quality(naive.ids)) for r in runs],
              f"{len(workload)} requests, quality on the {len(naive.ids)} the naive way ran; "
              f"{machine()}")
    print(f"wrote {args.output_dir / 'headline.json'}, headline.txt, headline.svg")


if __name__ == "__main__":
    main()
