"""A tenant's max_tokens caps per feature: reading, setting and removing them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models.tables import MaxTokensCap


@dataclass(frozen=True)
class CapInfo:
    feature: str
    max_tokens: int
    created_at: datetime
    updated_at: datetime


def caps_of(session: Session, tenant_id: uuid.UUID) -> dict[str, int]:
    return {feature: cap for feature, cap in session.execute(
        select(MaxTokensCap.feature, MaxTokensCap.max_tokens)
        .where(MaxTokensCap.tenant_id == tenant_id))}


def list_caps(session: Session, tenant_id: uuid.UUID) -> list[CapInfo]:
    rows = session.execute(select(MaxTokensCap).where(MaxTokensCap.tenant_id == tenant_id)
                           .order_by(MaxTokensCap.feature)).scalars()
    return [CapInfo(r.feature, r.max_tokens, r.created_at, r.updated_at) for r in rows]


def set_cap(session: Session, tenant_id: uuid.UUID, feature: str, max_tokens: int
            ) -> CapInfo:
    """Create or replace the cap. The caller commits."""
    row = session.execute(
        insert(MaxTokensCap).values(tenant_id=tenant_id, feature=feature,
                                    max_tokens=max_tokens)
        .on_conflict_do_update(index_elements=["tenant_id", "feature"],
                               set_={"max_tokens": max_tokens, "updated_at": func.now()})
        .returning(MaxTokensCap.feature, MaxTokensCap.max_tokens, MaxTokensCap.created_at,
                   MaxTokensCap.updated_at)
    ).one()
    return CapInfo(*row)


def delete_cap(session: Session, tenant_id: uuid.UUID, feature: str) -> bool:
    """Whether there was one. The caller commits."""
    deleted = session.execute(
        delete(MaxTokensCap).where(MaxTokensCap.tenant_id == tenant_id,
                                   MaxTokensCap.feature == feature)
        .returning(MaxTokensCap.feature)
    ).scalar_one_or_none()
    return deleted is not None
