"""Finalize: when every job of a submission is terminal, write its results and ledger to
the object store. Safe to run twice: it rewrites the same keys with the same content."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ledger.report import ledger_csv, ledger_json, results_jsonl
from ledger.spreadsheet import results_csv
from models.batches import progress_of
from models.reports import (
    complete_submission,
    input_columns_of,
    job_records,
    take_finished_submissions,
)
from models.status import SubmissionStatus
from models.webhooks import record_end
from storage.port import ObjectStore
from workers.batch_files import write_batch_files

log = logging.getLogger(__name__)


def output_keys(submission_id: uuid.UUID) -> dict[str, str]:
    base = f"submissions/{submission_id}"
    return {
        "results": f"{base}/results.jsonl",
        "ledger_json": f"{base}/ledger.json",
        "ledger_csv": f"{base}/ledger.csv",
        "results_csv": f"{base}/results.csv",  # CSV uploads only
        "manifest": f"{base}/manifest.json",
    }


class _Noted:
    """The object store, noting each object written through it: what the manifest lists."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.objects: list[dict[str, Any]] = []

    def put(self, key: str, data: bytes, content_type: str) -> str:
        uri = self.store.put(key, data, content_type)
        self.objects.append({"key": key, "uri": uri, "bytes": len(data),
                             "sha256": hashlib.sha256(data).hexdigest(),
                             "content_type": content_type})
        return uri

    def get(self, key: str) -> bytes:
        return self.store.get(key)

    def delete(self, key: str) -> None:
        self.store.delete(key)

    def download_url(self, uri: str, seconds: int) -> str | None:
        return self.store.download_url(uri, seconds)


def write_outputs(session: Session, target: ObjectStore, submission_id: uuid.UUID) -> None:
    store = _Noted(target)
    records = job_records(session, submission_id)
    keys = output_keys(submission_id)
    outputs = {
        "results": store.put(keys["results"], results_jsonl(records), "application/jsonl"),
        "ledger_json": store.put(
            keys["ledger_json"], ledger_json(str(submission_id), records), "application/json"
        ),
        "ledger_csv": store.put(keys["ledger_csv"], ledger_csv(records), "text/csv"),
    }
    columns = input_columns_of(session, submission_id)
    if columns is not None:  # a CSV upload: its rows come back as CSV too
        outputs["results_csv"] = store.put(keys["results_csv"], results_csv(columns, records),
                                           "text/csv")
    write_batch_files(session, store, submission_id)  # OpenAI batches: output + error files
    # Last, once every object it lists is written whole: a reader watching the bucket
    # takes the manifest as the sign that the outputs are complete, and checks each
    # object it lists (the batch APIs' output and error files too) by size and SHA-256.
    manifest = {"submission_id": str(submission_id), "outputs": outputs,
                "objects": store.objects}
    target.put(keys["manifest"], json.dumps(manifest, indent=2).encode(), "application/json")
    # The webhook event is queued in the transaction that completes the submission.
    progress = progress_of(session, [submission_id])[submission_id]
    record_end(session, submission_id, status=SubmissionStatus.COMPLETED,
               counts=progress.counts, cost=progress.cost, outputs=outputs)
    complete_submission(session, submission_id, outputs)


def finalize_ready(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    submission_ids: Sequence[uuid.UUID] | None = None,
) -> list[uuid.UUID]:
    """Finalize every finished submission (among `submission_ids`, or all); return them."""
    with sessions() as session:
        taken = take_finished_submissions(session, submission_ids)
    for submission_id in taken:
        with sessions() as session:
            write_outputs(session, store, submission_id)
        log.info("submission %s finalized", submission_id,
                 extra={"submission_id": str(submission_id)})
    return taken
