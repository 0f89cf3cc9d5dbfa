"""Tiers on a labelled set: small-only, large-only, `auto` and `cascade`, by the ledger.

    PENNY_DATABASE_URL=postgresql://... .venv/bin/python bench/tier_eval.py [--items 240]
        [--labelled var/bench/cascade-labelled.jsonl] [--small NAME] [--large NAME]
        [--arms small,large,auto,cascade]

The set is built here with answers checked automatically: arithmetic, capitals, unit
conversions, extraction from a sentence, yes/no facts and a few multi-step sums. The same
items go through penny's in-process pipeline four times, as four submissions queued
together: on the small tier by name (with logprobs, which the cascade needs), on the large
tier by name, with `model: "auto"` and with `model: "cascade"`. Cost is what the ledger
billed each submission (a cascade's escalated attempts included); accuracy is over each
job's final answer. A fifth row replays the cascade with the threshold `penny
calibrate-cascade` picks from the small and large runs' labels (a replay from those two
runs' answers and costs, not a fifth run), and the labelled set is written for that
command (with each item's prompt, for `penny train-router`). A sixth row replays `auto`
with the router's classifier (routing.classifier) consulted after the features, each item
scored by a classifier fitted on the other folds (5-fold, held out), with its threshold
picked on those held-out probabilities. With both tiers calibrated beforehand (`penny
calibrate MODEL` against the same database), the ledger's routing column (saving against
the large tier) is filled.

Tiers (`--small`, `--large`), any two of the models penny builds from wheels:
the Gemma 3 270M base model (`gemma-3-270m-base`, not instruction-tuned; the default
small tier: it writes fewer tokens), SmolLM2-135M-Instruct (`smollm2-135m-instruct`, the
default large tier) and
SmolLM2 with 4 of 30 layers removed (`smollm2-135m-instruct-pruned26`). `--arms cascade`
with `PENNY_CASCADE_MIN_MEAN_LOGPROB` set runs only the cascade, e.g. at the threshold
`penny calibrate-cascade` picked from an earlier run's labelled set (no labelled set, no
replays then: they need the small and large arms).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COUNTRIES = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo",
    "Canada": "Ottawa", "Australia": "Canberra", "Brazil": "Brasilia", "India": "New Delhi",
    "Mexico": "Mexico City", "Portugal": "Lisbon", "Greece": "Athens", "Norway": "Oslo",
    "Sweden": "Stockholm", "Poland": "Warsaw", "Ireland": "Dublin", "Austria": "Vienna",
    "Kenya": "Nairobi", "Peru": "Lima", "Argentina": "Buenos Aires", "Turkey": "Ankara",
    "Thailand": "Bangkok", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Hungary": "Budapest", "Belgium": "Brussels", "Netherlands": "Amsterdam",
}
UNITS = [("kilometres", "metres", 1000), ("metres", "centimetres", 100),
         ("kilograms", "grams", 1000), ("hours", "minutes", 60), ("minutes", "seconds", 60),
         ("litres", "millilitres", 1000)]
PEOPLE = ["Maria Lopez", "John Smith", "Aiko Tanaka", "Peter Novak", "Fatima Diallo",
          "Lucas Martin", "Anna Berg", "Omar Haddad"]
FACTS = [("Is the sun a star?", "yes"), ("Is water wet?", "yes"),
         ("Do fish live in water?", "yes"), ("Is ice cold?", "yes"),
         ("Do birds have feathers?", "yes"), ("Is the moon made of cheese?", "no"),
         ("Can dogs fly?", "no"), ("Is fire cold?", "no"), ("Do cats bark?", "no"),
         ("Is the sea made of sand?", "no")]
SYSTEM = "Answer the question briefly and directly."
# The models penny builds from wheels: served name -> source.
OFFLINE = {"smollm2-135m-instruct": "offline:smollm2",
           "smollm2-135m-instruct-pruned26": "offline:smollm2-pruned",
           "gemma-3-270m-base": "offline:gemma3-270m"}
ARMS = ("small", "large", "auto", "cascade")
MAX_TOKENS = 24


@dataclass(frozen=True)
class Item:
    kind: str
    question: str
    answer: str  # what a right reply contains (a number: its last number equals it)

    def correct(self, reply: str) -> bool:
        text = reply.lower().replace(",", "")
        if self.kind in ("arithmetic", "units", "multi-step"):
            numbers = re.findall(r"-?\d+(?:\.\d+)?", text)
            return bool(numbers) and float(numbers[-1]) == float(self.answer)
        if self.kind == "yes/no":
            first = re.findall(r"[a-z]+", text)[:1]
            return first == [self.answer]
        return self.answer.lower() in text


def items(count: int, seed: int = 7) -> list[Item]:
    rng = random.Random(seed)
    made: list[Item] = []
    kinds = ["arithmetic", "capital", "units", "extraction", "yes/no", "multi-step"]
    while len(made) < count:
        kind = kinds[len(made) % len(kinds)]
        if kind == "arithmetic":
            a, b = rng.randint(2, 60), rng.randint(2, 40)
            op = rng.choice("+-")
            made.append(Item(kind, f"What is {a} {op} {b}?", str(a + b if op == "+" else a - b)))
        elif kind == "capital":
            country = rng.choice(list(COUNTRIES))
            made.append(Item(kind, f"What is the capital of {country}?", COUNTRIES[country]))
        elif kind == "units":
            big, small, factor = rng.choice(UNITS)
            n = rng.randint(2, 9)
            made.append(Item(kind, f"How many {small} are in {n} {big}?", str(n * factor)))
        elif kind == "extraction":
            person, year = rng.choice(PEOPLE), rng.randint(1900, 2005)
            city = rng.choice(list(COUNTRIES.values()))
            made.append(Item(kind, f"Text: {person} was born in {city} in {year}. "
                                   "In which year was this person born?", str(year)))
        elif kind == "yes/no":
            question, answer = rng.choice(FACTS)
            made.append(Item(kind, f"{question} Answer yes or no.", answer))
        else:
            a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 5)
            made.append(Item(kind, f"What is ({a} + {b}) * {c}?", str((a + b) * c)))
    return made


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=240)
    parser.add_argument("--labelled", type=Path,
                        default=REPO / "var" / "bench" / "cascade-labelled.jsonl")
    parser.add_argument("--target", type=float, default=0.95,
                        help="calibrated cascade: this fraction of large-only's accuracy")
    parser.add_argument("--small", default="gemma-3-270m-base", choices=sorted(OFFLINE),
                        help="the cheap tier")
    parser.add_argument("--large", default="smollm2-135m-instruct", choices=sorted(OFFLINE),
                        help="the next tier")
    parser.add_argument("--arms", default=",".join(ARMS),
                        help=f"which of {','.join(ARMS)} to run (comma-separated)")
    args = parser.parse_args()
    os.environ.setdefault("PENNY_DATA_DIR", str(REPO / "var" / "bench"))
    os.environ.setdefault("PENNY_MODELS_DIR", str(REPO / "var" / "models"))
    sys.path.insert(0, str(REPO))

    import numpy as np
    from sqlalchemy import func, select

    from intake.limits import IntakeLimits
    from intake.schema import JobRequest
    from intake.service import jobs_for_requests, request_hash, submit
    from models.costing import latest_calibration
    from models.tables import Job, LedgerEntry, Result, Submission
    from models.tenants import ensure_tenant
    from penny.runtime import open_runtime
    from penny.settings import Settings
    from routing.calibration import LabelledOutcome, calibrate
    from routing.cascade import Confidence
    from routing.classifier import choose_threshold, consult, out_of_fold, small_suffices
    from routing.features import features_of
    from routing.router import assess
    from workers.embedder import EmbeddingRequest
    from workers.inprocess import InProcessPipeline
    from workers.sentence_embedder import SentenceTransformerEmbedder
    from workers.vllm_engine import VllmEngine

    small, large = args.small, args.large
    chosen = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    if small == large or not chosen or set(chosen) - set(ARMS):
        parser.error(f"two different tiers and arms among {ARMS}")
    settings = Settings(models={small: OFFLINE[small], large: OFFLINE[large]},
                        tiers=[small, large], default_model=large, result_cache=False,
                        single_flight=False)
    # Only the engines the chosen arms use (`auto` and `cascade` need both).
    engines = [VllmEngine(settings, model) for model, arms_on_it in (
        (small, {"small", "auto", "cascade"}), (large, {"large", "auto", "cascade"}))
        if arms_on_it & set(chosen)]
    runtime = open_runtime(settings)
    with runtime.sessions() as session:
        # The ledger's routing column needs both tiers' measured speeds. Calibrate them
        # beforehand (`penny calibrate MODEL`): a probe here, with both engines in one
        # process, did not finish in 25 minutes on a busy machine.
        uncalibrated = [m for m in settings.tiers if latest_calibration(session, m) is None]
    if uncalibrated:
        print(f"no calibration for {uncalibrated}: the ledger's routing column stays 0 "
              "(run `penny calibrate MODEL` for each tier first)", file=sys.stderr)
    limits = IntakeLimits.from_settings(settings)
    workload = items(args.items)
    arms = {label: fields for arm, label, fields in (
        ("small", "small only", {"model": small, "logprobs": True}),
        ("large", "large only", {"model": large}), ("auto", "auto", {"model": "auto"}),
        ("cascade", f"cascade ({settings.cascade_min_mean_logprob})", {"model": "cascade"}))
        if arm in chosen}
    submissions = {}
    with runtime.sessions() as session:
        tenant = ensure_tenant(session, "bench")
        for arm, fields in arms.items():
            requests = [JobRequest.model_validate({
                "messages": [{"role": "system", "content": SYSTEM},
                             {"role": "user", "content": item.question}],
                "max_tokens": MAX_TOKENS, "custom_id": str(index), **fields})
                for index, item in enumerate(workload)]
            stored = submit(session, tenant=tenant, kind="bulk",
                            jobs=jobs_for_requests(requests, limits),
                            payload_hash=request_hash([arm, time.time_ns()]))
            submissions[arm] = stored.submission.id
    started = time.perf_counter()

    def done() -> bool:
        with runtime.sessions() as session:
            return all(session.get(Submission, s).status == "completed"  # type: ignore[union-attr]
                       for s in submissions.values())

    with InProcessPipeline(runtime, engines):
        while not done():
            time.sleep(2)
    wall = time.perf_counter() - started

    rows = []
    replies: dict[str, dict[int, tuple[str, float | None, str, Decimal]]] = {}
    for arm, submission_id in submissions.items():
        with runtime.sessions() as session:
            cost, routing_saving, output_tokens = session.execute(
                select(func.sum(LedgerEntry.cost_usd), func.sum(LedgerEntry.saving_routing_usd),
                       func.sum(LedgerEntry.output_tokens))
                .where(LedgerEntry.submission_id == submission_id)).one()
            attempts = session.execute(select(func.count()).select_from(Job).where(
                Job.submission_id == submission_id, Job.cascade_of.is_not(None))).scalar_one()
            final = session.execute(
                select(Job.custom_id, Job.model, Result.text, Result.mean_logprob,
                       Result.finish_reason, LedgerEntry.cost_usd)
                .join(Result, Result.job_id == Job.id)
                .join(LedgerEntry, LedgerEntry.job_id == Job.id)
                .where(Job.submission_id == submission_id, Job.cascade_of.is_(None))).all()
        replies[arm] = {int(r.custom_id): (r.text, r.mean_logprob, r.finish_reason,
                                           r.cost_usd) for r in final}
        right = sum(workload[int(r.custom_id)].correct(r.text) for r in final)
        on_small = sum(1 for r in final if r.model == small)
        rows.append((arm, right, Decimal(cost), attempts, on_small, Decimal(routing_saving),
                     int(output_tokens)))

    n = len(workload)
    print(f"\n$ PENNY_DATABASE_URL=... .venv/bin/python bench/tier_eval.py --items {args.items}"
          f" --small {small} --large {large} --arms {','.join(chosen)}")
    labels = settings.labelled_models
    print(f"{n} items x {len(arms)} submissions, {wall:.0f} s wall; {machine()}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end; "
          f"small = {small} ({labels.get(small)}), large = {large} ({labels.get(large)}); "
          f"cascade threshold: mean token logprob < {settings.cascade_min_mean_logprob}\n")
    print("| arm | accuracy | ledger cost USD | vs large | cost per correct USD "
          "| escalation rate | on small tier | output tokens per job "
          "| ledger routing saving USD |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    large_total = next((r[2] for r in rows if r[0] == "large only"), None)
    for arm, right, cost, attempts, on_small, routing_saving, output_tokens in rows:
        versus = f"{float(cost / large_total):.2f}" if large_total else "-"
        print(f"| {arm} | {right / n:.1%} | {cost:.8f} | {versus} | "
              f"{(cost / right) if right else Decimal(0):.10f} | "
              f"{attempts / n:.1%} | {on_small / n:.0%} | {output_tokens / n:.1f} | "
              f"{routing_saving:.8f} |")
    if "small only" not in replies or "large only" not in replies:
        runtime.close()
        return

    # The labelled set: the small tier's confidence and both tiers' correctness per item.
    labelled = [LabelledOutcome(
        Confidence(replies["small only"][i][1], None, replies["small only"][i][2]),
        item.correct(replies["small only"][i][0]), item.correct(replies["large only"][i][0]))
        for i, item in enumerate(workload)]
    args.labelled.parent.mkdir(parents=True, exist_ok=True)
    with args.labelled.open("w") as out:
        for i, outcome in enumerate(labelled):
            out.write(json.dumps({
                "mean_logprob": outcome.confidence.mean_logprob,
                "finish_reason": outcome.confidence.finish_reason,
                "small_correct": outcome.small_correct, "large_correct": outcome.large_correct,
                "small_cost_usd": str(replies["small only"][i][3]),
                "large_cost_usd": str(replies["large only"][i][3]),
                "prompt": f"{SYSTEM}\n{workload[i].question}"}) + "\n")
    small_cost = float(sum(r[3] for r in replies["small only"].values()))
    large_cost = float(sum(r[3] for r in replies["large only"].values()))
    large_accuracy = next(r[1] for r in rows if r[0] == "large only") / n
    best = calibrate(labelled, args.target * large_accuracy,
                     small_cost=small_cost / n, large_cost=large_cost / n)

    # The classifier, replayed: held-out probabilities, the features first, then it.
    embedder = SentenceTransformerEmbedder(settings, settings.default_embedding_model)
    prompts = [f"{SYSTEM}\n{item.question}" for item in workload]
    vectors = np.asarray([e.vectors[0] for e in embedder.embed(
        [EmbeddingRequest(key=str(i), inputs=(p,)) for i, p in enumerate(prompts)]).embeddings])
    small_ok = [o.small_correct for o in labelled]
    large_ok = [o.large_correct for o in labelled]
    held_out = out_of_fold(vectors, [small_suffices(s, b) for s, b in
                                     zip(small_ok, large_ok, strict=True)])
    threshold = choose_threshold(held_out, small_ok, large_ok, args.target * large_accuracy,
                                 small_cost=small_cost / n, large_cost=large_cost / n).threshold
    right_c, cost_c, small_c = 0, Decimal(0), 0
    for i, p in enumerate(held_out):
        difficulty = assess(features_of(prompts[i], MAX_TOKENS)).difficulty
        on_small = consult(difficulty, p, threshold, settings.tiers).tier == 0
        small_c += on_small
        right_c += small_ok[i] if on_small else large_ok[i]
        cost_c += replies["small only" if on_small else "large only"][i][3]

    print(f"| cascade, calibrated (replay, {best.policy.min_mean_logprob:.3f}) | "
          f"{best.accuracy:.1%} | - | {best.relative_cost:.2f} | - | "
          f"{best.escalation_rate:.1%} | - | - | - |")
    print(f"| auto + classifier (replay, held out) | {right_c / n:.1%} | "
          f"{cost_c:.8f} | {float(cost_c / large_total):.2f} | "
          f"{(cost_c / right_c) if right_c else Decimal(0):.10f} | - | "
          f"{small_c / n:.0%} | - | - |")
    print(f"classifier threshold (held out, {args.target:.0%} of large-only accuracy): "
          f"p(small suffices) >= {threshold:.3f} goes small")
    print(f"\ncalibrated threshold for {args.target:.0%} of large-only accuracy: mean token "
          f"logprob < {best.policy.min_mean_logprob:.3f} escalates (labelled set: "
          f"{args.labelled}; `penny calibrate-cascade` reads it)")
    by_kind: dict[str, list[int]] = {}
    for i, item in enumerate(workload):
        counts = by_kind.setdefault(item.kind, [0, 0, 0])
        counts[0] += 1
        counts[1] += item.correct(replies["small only"][i][0])
        counts[2] += item.correct(replies["large only"][i][0])
    print("\n| kind | items | small right | large right |\n|---|---:|---:|---:|")
    for kind, (count, s, big) in by_kind.items():
        print(f"| {kind} | {count} | {s} | {big} |")
    runtime.close()


if __name__ == "__main__":
    main()
