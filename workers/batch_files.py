"""Finalize, for OpenAI batches: the output file and the error file, stored and registered
as files (purpose `batch_output`) so the Files API serves them.

File ids are derived from the batch id, so finalizing twice rewrites the same two files.
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from compat.openai_output import render_batch_files
from models.batches import OPENAI_KIND, line_records, set_batch_files
from models.files import insert_file, object_key_for
from models.tables import Submission
from storage.port import ObjectStore


def batch_file_id(submission_id: uuid.UUID, which: str) -> str:
    return f"file-{uuid.uuid5(submission_id, which).hex}"


def write_batch_files(session: Session, store: ObjectStore, submission_id: uuid.UUID) -> None:
    """Write and register the batch's files; a no-op for other submissions. The caller
    commits (together with the submission's completion)."""
    submission = session.get_one(Submission, submission_id)
    if submission.kind != OPENAI_KIND:
        return
    files = render_batch_files(line_records(session, submission_id),
                               submission.endpoint or "")
    ids: dict[str, str | None] = {"output": None, "error": None}
    for which, data, count in (("output", files.output, files.output_lines),
                               ("error", files.errors, files.error_lines)):
        if not count:
            continue
        file_id = batch_file_id(submission_id, which)
        store.put(object_key_for(file_id), data, "application/jsonl")
        insert_file(session, file_id=file_id, tenant_id=submission.tenant_id,
                    purpose="batch_output", filename=f"batch_{submission_id.hex}_{which}.jsonl",
                    size=len(data), expires_after_seconds=submission.output_expires_after_seconds,
                    submission_id=submission_id)
        ids[which] = file_id
    set_batch_files(session, submission_id, ids["output"], ids["error"])
