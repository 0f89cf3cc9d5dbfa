"""Queries on the files of the OpenAI-compatible Files API (rows here, bytes in the store)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models.tables import StoredFile

# Every id penny hands out (uploads, batch outputs) looks like this.
_FILE_ID = re.compile(r"file-[0-9a-f]{32}")


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex}"


def _well_formed(file_id: str) -> bool:
    """Anything else names no file; it is not sent to Postgres at all (a NUL in a URL
    would make the query itself fail)."""
    return _FILE_ID.fullmatch(file_id) is not None


def object_key_for(file_id: str) -> str:
    return f"files/{file_id}"


def _alive() -> object:
    return or_(StoredFile.expires_at.is_(None), StoredFile.expires_at > func.now())


def insert_file(
    session: Session,
    *,
    file_id: str,
    tenant_id: uuid.UUID,
    purpose: str,
    filename: str,
    size: int,
    expires_after_seconds: int | None,
    submission_id: uuid.UUID | None = None,
) -> StoredFile:
    """Insert a file row (a no-op when the id exists, so finalize may run twice)."""
    expires = (func.now() + timedelta(seconds=expires_after_seconds)
               if expires_after_seconds is not None else None)
    session.execute(
        insert(StoredFile)
        .values(id=file_id, tenant_id=tenant_id, purpose=purpose, filename=filename,
                bytes=size, object_key=object_key_for(file_id), submission_id=submission_id,
                expires_at=expires)
        .on_conflict_do_nothing()
    )
    return session.get_one(StoredFile, file_id)


def insert_upload(
    session: Session,
    *,
    file_id: str,
    tenant_id: uuid.UUID,
    purpose: str,
    filename: str,
    size: int,
    expires_after_seconds: int | None,
    idempotency_key: str | None,
    request_hash: str,
) -> StoredFile | None:
    """Insert an upload's row; None when its idempotency key is already taken (a
    concurrent twin waits here until the first commits or rolls back). The caller
    commits."""
    expires = (func.now() + timedelta(seconds=expires_after_seconds)
               if expires_after_seconds is not None else None)
    inserted = session.execute(
        insert(StoredFile)
        .values(id=file_id, tenant_id=tenant_id, purpose=purpose, filename=filename,
                bytes=size, object_key=object_key_for(file_id), expires_at=expires,
                idempotency_key=idempotency_key, request_hash=request_hash)
        .on_conflict_do_nothing()
        .returning(StoredFile.id)
    ).scalar_one_or_none()
    return session.get_one(StoredFile, file_id) if inserted is not None else None


def find_upload(session: Session, tenant_id: uuid.UUID, idempotency_key: str
                ) -> StoredFile | None:
    return session.execute(
        select(StoredFile).where(StoredFile.tenant_id == tenant_id,
                                 StoredFile.idempotency_key == idempotency_key)
    ).scalar_one_or_none()


def forget_upload_key(session: Session, file_id: str) -> None:
    """Free an upload's idempotency key once its window has passed. The caller commits."""
    session.execute(update(StoredFile).where(StoredFile.id == file_id)
                    .values(idempotency_key=None))


def get_file(session: Session, tenant_id: uuid.UUID, file_id: str) -> StoredFile | None:
    if not _well_formed(file_id):
        return None
    return session.execute(
        select(StoredFile).where(StoredFile.id == file_id, StoredFile.tenant_id == tenant_id,
                                 _alive())  # type: ignore[arg-type]
    ).scalar_one_or_none()


@dataclass(frozen=True)
class FilePage:
    files: list[StoredFile]
    has_more: bool


def list_files(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    limit: int,
    after: str | None,
    newest_first: bool,
    purpose: str | None,
) -> FilePage:
    """Keyset pagination on (created_at, id): stable while files come and go."""
    query = select(StoredFile).where(StoredFile.tenant_id == tenant_id,
                                     _alive())  # type: ignore[arg-type]
    if purpose is not None:
        query = query.where(StoredFile.purpose == purpose)
    key = tuple_(StoredFile.created_at, StoredFile.id)
    if after is not None and _well_formed(after):
        cursor = session.get(StoredFile, after)
        if cursor is not None and cursor.tenant_id == tenant_id:
            mark = tuple_(cursor.created_at, cursor.id)
            query = query.where(key < mark if newest_first else key > mark)
    order = (StoredFile.created_at.desc(), StoredFile.id.desc()) if newest_first else (
        StoredFile.created_at.asc(), StoredFile.id.asc())
    rows = list(session.execute(query.order_by(*order).limit(limit + 1)).scalars())
    return FilePage(files=rows[:limit], has_more=len(rows) > limit)


def delete_file(session: Session, tenant_id: uuid.UUID, file_id: str) -> StoredFile | None:
    """Delete the row and return it (its object is the caller's to remove), or None."""
    if not _well_formed(file_id):
        return None
    return session.execute(
        delete(StoredFile)
        .where(StoredFile.id == file_id, StoredFile.tenant_id == tenant_id)
        .returning(StoredFile)
    ).scalar_one_or_none()


def take_expired_files(session: Session, limit: int = 500) -> Sequence[tuple[str, str]]:
    """Delete expired file rows; return (id, object key) of each for the store cleanup."""
    expired = select(StoredFile.id).where(StoredFile.expires_at <= func.now()).limit(limit)
    rows = session.execute(
        delete(StoredFile).where(StoredFile.id.in_(expired.scalar_subquery()))
        .returning(StoredFile.id, StoredFile.object_key)
    ).all()
    return [(row[0], row[1]) for row in rows]
