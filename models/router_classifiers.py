"""Versioned router classifiers: storing a newly fitted one and reading the latest."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.tables import StoredRouterClassifier
from routing.classifier import RouterClassifier


def _classifier(row: StoredRouterClassifier) -> RouterClassifier:
    return RouterClassifier(embedding_model=row.embedding_model,
                            weights=tuple(float(w) for w in row.weights), bias=row.bias,
                            threshold=row.threshold, id=row.id, version=row.version)


def store_classifier(session: Session, classifier: RouterClassifier,
                     trained_on: dict[str, Any]) -> RouterClassifier:
    """Store it as the next version; commits. (Training is an operator's command, one at a
    time: a concurrent one would fail on the unique version and can be run again.)"""
    version = int(session.execute(
        select(func.coalesce(func.max(StoredRouterClassifier.version), 0))).scalar_one()) + 1
    row = StoredRouterClassifier(
        version=version, embedding_model=classifier.embedding_model,
        dimensions=classifier.dimensions, weights=list(classifier.weights),
        bias=classifier.bias, threshold=classifier.threshold, trained_on=trained_on)
    session.add(row)
    session.commit()
    return _classifier(row)


def latest_classifier(session: Session) -> RouterClassifier | None:
    row = session.execute(select(StoredRouterClassifier)
                          .order_by(StoredRouterClassifier.version.desc()).limit(1)
                          ).scalar_one_or_none()
    return _classifier(row) if row is not None else None


def list_classifiers(session: Session) -> list[tuple[RouterClassifier, dict[str, Any]]]:
    """Every version, newest first, with what it was trained on."""
    rows = session.execute(select(StoredRouterClassifier)
                           .order_by(StoredRouterClassifier.version.desc())).scalars()
    return [(_classifier(row), dict(row.trained_on)) for row in rows]
