"""Opt-in prompt compression on long contexts: prompt tokens saved vs an automatic quality
score, every compression ratio against the uncompressed prompts, in one run.

    .venv/bin/python bench/compression_bench.py [--docs 24] [--sentences 60]
        [--ratios 0.7,0.5,0.35] [--max-tokens 96] [--compiled] [--prompt-only]

The set is built here: each document is a project report of `--sentences` sentences, four
of which state its key facts (who leads it, where it is based, its budget, the month it
starts) at random places among plausible filler about the same kind of project. The job
asks, after the report, for a short summary naming those four things. Score: the share of
the four facts whose value (the leader's surname, the city, the budget's number, the
month) appears in the answer; quality is the mean over documents. Compression is the code
the worker runs (`compression.extractive` with the offline embedder); every arm runs as one
engine batch of the same documents, greedy, with the prefix cache emptied first.
`--prompt-only` loads no engine: it reports, per ratio, the share of characters kept and
the share of key facts still in the compressed prompt (what any model could at best say).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SEED = 20261207
LEADERS = ["Maria Lopez", "John Okafor", "Aiko Tanaka", "Peter Novak", "Fatima Diallo",
           "Lucas Martin", "Anna Berg", "Omar Haddad", "Chen Wei", "Sara Rossi",
           "David Cohen", "Ines Silva", "Tomas Horak", "Leila Nasser", "Erik Lund"]
CITIES = ["Madrid", "Nairobi", "Osaka", "Prague", "Dakar", "Lyon", "Bergen", "Cairo",
          "Porto", "Krakow", "Quito", "Perth", "Tallinn", "Cork", "Hanoi"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
PROJECTS = ["a water purification network", "a rural broadband rollout",
            "a coastal wind farm", "a city bike-sharing scheme", "a school meals programme",
            "a hospital records system", "a river clean-up", "a solar microgrid"]
FACTS = ["The project is led by {leader}.", "Its team is based in {city}.",
         "The approved budget is {budget} million euros.", "Work starts in {month}."]
# Filler: plausible report sentences that state none of the facts.
SUBJECTS = ["The steering group", "The field team", "An external reviewer", "The finance office",
            "Local partners", "The design team", "The procurement unit", "Volunteers",
            "The communications team", "An advisory board"]
VERBS = ["reviewed", "discussed", "updated", "questioned", "approved", "documented",
         "reworked", "presented", "tested", "summarised"]
OBJECTS = ["the risk register", "the supplier shortlist", "the training plan",
           "the community survey results", "the maintenance schedule",
           "the safety guidelines", "the reporting templates", "the pilot site layout",
           "the stakeholder map", "the quality checklist", "the data sharing agreement",
           "the outreach calendar"]
TAILS = ["after a long meeting.", "with only minor changes.", "ahead of the next review.",
         "and asked for more detail.", "following feedback from residents.",
         "during the second workshop.", "without major objections.",
         "before the holiday break.", "in a short written note.",
         "together with the regional office."]
INSTRUCTION = ("Summarise the report in two or three sentences. Say who leads the project, "
               "where its team is based, its budget and the month work starts.")
SYSTEM = "You write short, factual summaries of reports."


@dataclass(frozen=True)
class Document:
    leader: str
    city: str
    budget: int
    month: str
    text: str

    def facts(self) -> list[str]:
        """The strings an answer must contain, one per key fact."""
        return [self.leader.split()[-1], self.city, str(self.budget), self.month]

    def prompt(self) -> str:
        return f"Read this report:\n{self.text}\n{INSTRUCTION}"


def documents(count: int, sentences: int) -> list[Document]:
    rng = random.Random(SEED)
    out = []
    for _ in range(count):
        leader, city = rng.choice(LEADERS), rng.choice(CITIES)
        budget, month = rng.randint(2, 95), rng.choice(MONTHS)
        filler = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} "
                  f"{rng.choice(TAILS)}" for _ in range(sentences - len(FACTS) - 1)]
        for fact in FACTS:
            filler.insert(rng.randint(0, len(filler)),
                          fact.format(leader=leader, city=city, budget=budget, month=month))
        opening = f"This report covers {rng.choice(PROJECTS)}."
        out.append(Document(leader, city, budget, month, " ".join([opening, *filler])))
    return out


def score(document: Document, answer: str) -> float:
    lowered = answer.lower()
    facts = document.facts()
    return sum(1 for fact in facts if fact.lower() in lowered) / len(facts)


def stored(document: Document, max_tokens: int) -> dict[str, Any]:
    from intake.schema import JobRequest

    return JobRequest.model_validate({
        "messages": [{"role": "system", "content": SYSTEM},
                     {"role": "user", "content": document.prompt()}],
        "max_tokens": max_tokens, "temperature": 0}).engine_request()


def prompt_only(embed: Any, docs: Sequence[Document], ratios: Sequence[float]) -> None:
    from compression.extractive import CompressionSpec, compress_request

    print("| ratio | context chars kept | key facts still in the prompt |")
    print("|---|---:|---:|")
    for ratio in ratios:
        kept = total = 0
        facts = 0.0
        for document in docs:
            done = compress_request(stored(document, 8), CompressionSpec(ratio, 0), embed)
            kept, total = kept + done.kept_chars, total + done.context_chars
            facts += score(document, done.request["messages"][-1]["content"])
        print(f"| {ratio} | {kept / total:.0%} | {facts / len(docs):.3f} |")


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB"


def run_arm(engine: Any, embed: Any, docs: Sequence[Document], ratio: float | None,
            max_tokens: int) -> dict[str, Any]:
    from compression.extractive import CompressionSpec, compress_request
    from workers.engine import GenerationRequest

    started = time.perf_counter()
    requests = []
    for index, document in enumerate(docs):
        request = stored(document, max_tokens)
        if ratio is not None:
            request = compress_request(request, CompressionSpec(ratio, 0), embed).request
        requests.append(GenerationRequest.from_stored(str(index), request, cache_salt=""))
    compress_seconds = time.perf_counter() - started
    engine.llm.reset_prefix_cache()
    batch = engine.generate(requests)
    scores = [score(d, g.text) for d, g in zip(docs, batch.generations, strict=True)]
    return {"ratio": ratio, "prompt_tokens": sum(g.prompt_tokens for g in batch.generations),
            "output_tokens": sum(g.output_tokens for g in batch.generations),
            "quality": sum(scores) / len(scores), "engine_seconds": batch.engine_seconds,
            "compress_seconds": compress_seconds,
            "failed": sum(1 for g in batch.generations if not g.ok),
            "sample": batch.generations[0].text}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=24)
    parser.add_argument("--sentences", type=int, default=60)
    parser.add_argument("--ratios", default="0.7,0.5,0.35")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--compiled", action="store_true", help="vLLM with compilation")
    parser.add_argument("--prompt-only", action="store_true",
                        help="no engine: the facts left in the compressed prompts")
    args = parser.parse_args()
    os.environ.setdefault("PENNY_DATA_DIR", str(REPO / "var" / "bench"))
    os.environ.setdefault("PENNY_MODELS_DIR", str(REPO / "var" / "models"))

    import numpy as np

    from penny.settings import Settings
    from workers.embedder import EmbeddingRequest
    from workers.sentence_embedder import SentenceTransformerEmbedder
    from workers.vllm_engine import VllmEngine

    settings = Settings(engine_enforce_eager=not args.compiled)
    embedder = SentenceTransformerEmbedder(settings, settings.default_embedding_model)

    def embed(texts: Sequence[str]) -> list[Any]:
        done = embedder.embed([EmbeddingRequest(str(i), (t,)) for i, t in enumerate(texts)])
        vectors = [np.asarray(e.vectors[0], dtype=np.float32) for e in done.embeddings]
        return [v / np.linalg.norm(v) for v in vectors]

    docs = documents(args.docs, args.sentences)
    ratios = [float(r) for r in args.ratios.split(",")]
    if args.prompt_only:
        print(f"\n{len(docs)} documents of {args.sentences} sentences (4 key facts each); "
              f"embedder {settings.default_embedding_model}; {machine()}\n")
        prompt_only(embed, docs, ratios)
        return
    engine = VllmEngine(settings, settings.default_model)
    run_arm(engine, embed, docs[:1], None, args.max_tokens)  # warm-up
    rows = [run_arm(engine, embed, docs, ratio, args.max_tokens) for ratio in [None, *ratios]]

    base = rows[0]
    print(f"\n{len(docs)} documents of {args.sentences} sentences (4 key facts each), "
          f"max_tokens {args.max_tokens}, greedy, model {settings.default_model}, "
          f"{'compiled' if args.compiled else 'eager'}; embedder "
          f"{settings.default_embedding_model}; {machine()}\n")
    print("| arm | prompt tokens | saved | quality (facts kept) | vs uncompressed | "
          "compress s | engine s | failed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        name = "uncompressed" if row["ratio"] is None else f"ratio {row['ratio']}"
        saved = 1 - row["prompt_tokens"] / base["prompt_tokens"]
        relative = row["quality"] / base["quality"] if base["quality"] else float("nan")
        print(f"| {name} | {row['prompt_tokens']} | {saved:.0%} | {row['quality']:.3f} | "
              f"{relative:.2f}x | {row['compress_seconds']:.1f} | "
              f"{row['engine_seconds']:.1f} | {row['failed']} |")
    for row in rows:
        print(f"first answer, ratio {row['ratio']}: {row['sample'][:200]!r}")


if __name__ == "__main__":
    main()
