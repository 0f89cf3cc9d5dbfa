"""Free-text "answer in JSON" prompting vs `response_format: json_schema`, on the same
prompts in the same engine: output tokens, engine seconds, parse rate and accuracy.

    .venv/bin/python bench/structured_bench.py [--jobs 48] [--max-tokens 96] [--compiled]

The workload is built here with known answers: half the jobs extract name, age and city
from a one-sentence note, half classify a short review as positive, negative or neutral.
Both arms send the very same messages; only the constraint differs. Each arm runs as one
engine batch (all its jobs in one `generate` call) with the prefix cache emptied first,
after a one-job warm-up of each arm so grammar set-up paid once per process is not billed
to the first batch. An answer "parses" if `json.loads` reads the whole text as an object
with the asked-for keys; it is "right" if every field equals the known answer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
NAMES = ["Maria Lopez", "John Smith", "Aiko Tanaka", "Peter Novak", "Fatima Diallo",
         "Lucas Martin", "Anna Berg", "Omar Haddad", "Chen Wei", "Sara Rossi",
         "David Cohen", "Ines Silva"]
CITIES = ["Madrid", "London", "Tokyo", "Prague", "Dakar", "Lyon", "Oslo", "Cairo",
          "Beijing", "Rome", "Haifa", "Lisbon"]
NOTES = ["{name} is {age} years old and lives in {city}.",
         "{name}, aged {age}, moved to {city} last spring.",
         "Meet {name} from {city}; {name} turned {age} this year."]
REVIEWS = {
    "positive": ["I love this kettle, it boils fast and looks great.",
                 "Excellent service, the staff were kind and quick.",
                 "Best pizza I have had in years, will come back.",
                 "The book was wonderful and I could not put it down."],
    "negative": ["The phone broke after two days and support never answered.",
                 "Terrible hotel, the room was dirty and noisy.",
                 "The shoes hurt and the sole came off in a week.",
                 "Awful film, boring plot and bad acting."],
    "neutral": ["The parcel arrived on Tuesday as scheduled.",
                "The shop opens at nine and closes at six.",
                "The chair is made of wood and comes in brown.",
                "The train from Lyon takes two hours to reach Paris."],
}
SYSTEM = ("You are a precise data extraction assistant. Read the user's text and reply with "
          "only a JSON object, no explanation, no markdown. ") * 2
PERSON = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 40},
                         "age": {"type": "integer", "minimum": 0, "maximum": 130},
                         "city": {"type": "string", "maxLength": 40}},
          "required": ["name", "age", "city"], "additionalProperties": False}
LABELS = ["positive", "negative", "neutral"]
SENTIMENT = {"type": "object", "properties": {"sentiment": {"enum": LABELS}},
             "required": ["sentiment"], "additionalProperties": False}


@dataclass(frozen=True)
class Task:
    kind: str  # "extract" or "classify"
    text: str
    expected: dict[str, Any]

    def question(self) -> str:
        if self.kind == "extract":
            return ('Return a JSON object with keys "name" (string), "age" (integer) and '
                    f'"city" (string).\nText: {self.text}')
        return ('Return a JSON object with key "sentiment", one of "positive", "negative" '
                f'or "neutral".\nReview: {self.text}')

    def schema(self) -> dict[str, Any]:
        return PERSON if self.kind == "extract" else SENTIMENT


def workload(count: int) -> list[Task]:
    tasks: list[Task] = []
    reviews = [(label, text) for label in LABELS for text in REVIEWS[label]]
    for i in range(count):
        if i % 2 == 0:
            name, city, age = NAMES[i // 2 % len(NAMES)], CITIES[(i // 2 * 5) % len(CITIES)], \
                19 + (i * 7) % 60
            text = NOTES[i // 2 % len(NOTES)].format(name=name, age=age, city=city)
            tasks.append(Task("extract", text, {"name": name, "age": age, "city": city}))
        else:
            label, text = reviews[i // 2 % len(reviews)]
            tasks.append(Task("classify", text, {"sentiment": label}))
    return tasks


def score(task: Task, text: str) -> tuple[bool, bool]:
    """(parses, right)."""
    try:
        answer = json.loads(text)
    except ValueError:
        return False, False
    if not isinstance(answer, dict) or not set(task.expected) <= set(answer):
        return False, False
    right = all(
        (str(answer[k]).strip().lower() == str(v).lower()) if isinstance(v, str)
        else answer[k] == v
        for k, v in task.expected.items())
    return True, right


def requests(tasks: Sequence[Task], structured: bool, max_tokens: int) -> list[Any]:
    from intake.schema import JobRequest
    from workers.engine import GenerationRequest

    out = []
    for i, task in enumerate(tasks):
        body: dict[str, Any] = {
            "messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": task.question()}],
            "max_tokens": max_tokens, "temperature": 0}
        if structured:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": task.kind, "schema": task.schema(), "strict": True}}
        document = JobRequest.model_validate(body).engine_request()
        out.append(GenerationRequest.from_stored(str(i), document, cache_salt=""))
    return out


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--compiled", action="store_true", help="vLLM with compilation")
    args = parser.parse_args()
    os.environ.setdefault("PENNY_DATA_DIR", str(REPO / "var" / "bench"))
    os.environ.setdefault("PENNY_MODELS_DIR", str(REPO / "var" / "models"))

    from penny.settings import Settings
    from workers.vllm_engine import VllmEngine

    settings = Settings(engine_enforce_eager=not args.compiled)
    engine = VllmEngine(settings, settings.default_model)
    tasks = workload(args.jobs)
    for structured in (False, True):  # warm-up: one job per arm
        engine.generate(requests(tasks[:1], structured, args.max_tokens))

    rows = []
    for structured in (False, True):
        engine.llm.reset_prefix_cache()
        batch = engine.generate(requests(tasks, structured, args.max_tokens))
        scored = [score(t, g.text) for t, g in zip(tasks, batch.generations, strict=True)]
        rows.append({
            "arm": "json_schema" if structured else "free text",
            "output_tokens": sum(g.output_tokens for g in batch.generations),
            "cut": sum(1 for g in batch.generations if g.finish_reason == "length"),
            "seconds": batch.engine_seconds,
            "parsed": sum(p for p, _ in scored),
            "right": sum(r for _, r in scored),
            "right_by_kind": {kind: sum(r for t, (_, r) in zip(tasks, scored, strict=True)
                                        if t.kind == kind) for kind in ("extract", "classify")},
            "sample": batch.generations[0].text,
            "wrong": [(t.expected, g.text) for t, g, (_, r) in zip(
                tasks, batch.generations, scored, strict=True) if not r][:4],
        })

    kinds = {k: sum(1 for t in tasks if t.kind == k) for k in ("extract", "classify")}
    print(f"\n{len(tasks)} jobs ({kinds['extract']} extraction, {kinds['classify']} "
          f"classification), max_tokens {args.max_tokens}, greedy, model "
          f"{settings.default_model}, {'compiled' if args.compiled else 'eager'}; "
          f"{machine()}\n")
    print("| arm | output tokens | cut at max_tokens | engine s | parses | right "
          "(extract / classify) |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        by_kind = row["right_by_kind"]
        print(f"| {row['arm']} | {row['output_tokens']} | {row['cut']} | "
              f"{row['seconds']:.1f} | {row['parsed']}/{len(tasks)} | {row['right']}/"
              f"{len(tasks)} ({by_kind['extract']}/{kinds['extract']} / "
              f"{by_kind['classify']}/{kinds['classify']}) |")
    free, guided = rows
    print(f"\njson_schema output tokens vs free text: "
          f"{guided['output_tokens'] / max(free['output_tokens'], 1):.2f}x")
    for row in rows:
        print(f"first answer, {row['arm']}: {row['sample']!r}")
        for expected, text in row["wrong"]:
            print(f"  wrong ({row['arm']}): expected {expected}, got {text[:120]!r}")


if __name__ == "__main__":
    main()
