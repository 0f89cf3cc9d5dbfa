"""`penny train-router LABELLED`: fit the router's classifier on a labelled set (the one
`penny calibrate-cascade` reads, with each item's prompt), store it as the next version,
and say how it did on items it was not fitted on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from models.router_classifiers import store_classifier
from penny.runtime import open_runtime
from penny.settings import Settings
from routing.calibration import LabelledSet, parse_labelled
from routing.classifier import Training, train
from workers.embedder import Embedder, EmbeddingRequest


def embed_prompts(embedder: Embedder, prompts: list[str]) -> np.ndarray:
    done = embedder.embed([EmbeddingRequest(key=str(i), inputs=(text,))
                           for i, text in enumerate(prompts)])
    failed = [e.key for e in done.embeddings if not e.ok or not e.vectors]
    if failed:
        raise typer.BadParameter(f"the embedder refused {len(failed)} prompt(s), the first "
                                 f"on line {int(failed[0]) + 1}")
    return np.asarray([e.vectors[0] for e in done.embeddings], dtype=float)


def training_of(labelled: LabelledSet, embedder: Embedder, target: float,
                small_cost: float, large_cost: float) -> Training:
    if labelled.prompts is None:
        raise typer.BadParameter("every line needs its `prompt` to train the router on "
                                 "(bench/tier_eval.py writes them)")
    vectors = embed_prompts(embedder, labelled.prompts)
    return train(vectors, [o.small_correct for o in labelled.outcomes],
                 [o.large_correct for o in labelled.outcomes], target_accuracy=target,
                 small_cost=small_cost, large_cost=large_cost,
                 embedding_model=embedder.model_name)


def read_labelled(path: Path, small_cost: float | None, large_cost: float | None
                  ) -> tuple[LabelledSet, float, float]:
    """The labelled set `penny calibrate-cascade` and `penny train-router` read, with the
    two tiers' costs per item: as given, else the lines' means."""
    try:
        labelled = parse_labelled(path.read_text())
    except (OSError, ValueError) as error:
        raise typer.BadParameter(f"{path}: {error}") from None
    small = small_cost if small_cost is not None else labelled.small_cost
    large = large_cost if large_cost is not None else labelled.large_cost
    if small is None or large is None or large <= 0:
        raise typer.BadParameter("give --small-cost and --large-cost: the lines carry no "
                                 "costs (or a large cost of 0)")
    return labelled, small, large


def train_router_command(settings: Settings, path: Path, target: float,
                         small_cost: float | None, large_cost: float | None) -> None:
    labelled, small, large = read_labelled(path, small_cost, large_cost)
    if labelled.prompts is None:  # before loading an embedder for nothing
        raise typer.BadParameter("every line needs its `prompt` to train the router on "
                                 "(bench/tier_eval.py writes them)")
    from workers.sentence_embedder import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(settings, settings.default_embedding_model)
    training = training_of(labelled, embedder, target, small, large)
    runtime = open_runtime(settings)
    try:
        with runtime.sessions() as session:
            stored = store_classifier(session, training.classifier, {
                "file": path.name, "items": training.items, "positives": training.positives,
                "target_accuracy": target, "accuracy": training.choice.accuracy,
                "on_small": training.choice.on_small,
                "relative_cost": training.choice.relative_cost})
    finally:
        runtime.close()
    choice = training.choice
    reached = "reaches" if choice.accuracy >= target else "does NOT reach"
    typer.echo(f"router classifier v{stored.version} ({stored.embedding_model}, "
               f"{stored.dimensions} dimensions) on {training.items} items, "
               f"{training.positives} where the small tier suffices")
    typer.echo(f"threshold {choice.threshold:.3f} {reached} {target:.1%} on held-out folds: "
               f"accuracy {choice.accuracy:.1%}, {choice.on_small:.0%} sent to the small "
               f"tier, cost {choice.relative_cost:.2f}x large-only")
    typer.echo("auto consults it with PENNY_ROUTER_CLASSIFIER=true")
