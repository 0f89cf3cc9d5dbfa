"""`penny run FILE`: one file through the whole pipeline on the embedded default."""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.orm import Session

from cache.model_identity import cache_policy
from intake.admission import IntakePolicy
from intake.csv_mapping import BAD_FILE, CsvOptions, refuse_bad_rows
from intake.csv_upload import MAX_REPORTED_ERRORS, CsvSource, queue_csv
from intake.files import LineError, parse_input_file, read_csv
from intake.limits import IntakeLimits
from intake.max_tokens_caps import JobCaps
from intake.service import jobs_for_file, request_hash, submit
from ledger.report import LedgerTotals, totals
from models.max_tokens_caps import caps_of
from models.reports import job_records
from models.submissions import (
    NewJob,
    count_unfinished,
    find_unfinished,
    get_submission,
    status_counts,
    unfinished_models,
)
from models.tables import Submission
from models.tenants import TenantRef, ensure_tenant
from penny.calibration_cli import calibrate_if_missing
from penny.errors import InputFileError, PennyError
from penny.runtime import Runtime, open_runtime
from penny.settings import Settings
from workers.finalize import finalize_ready
from workers.inprocess import InProcessPipeline

CLI_TENANT = "cli"


class EngineStopped(PennyError):
    code = "engine_stopped"


@dataclass(frozen=True)
class RunSummary:
    submission_id: str
    totals: LedgerTotals
    outputs: dict[str, str]
    engine_startup_seconds: float

    @property
    def failed(self) -> int:
        return self.totals.failed

    def print(self, wall_seconds: float) -> None:
        console = Console()
        t = self.totals
        table = Table(title=f"penny run — submission {self.submission_id}")
        table.add_column("what")
        table.add_column("value", justify="right")
        table.add_row("cost (engine time)", f"${t.cost_usd:.6f}")
        # What penny saved against doing it the naive way on this hardware, by mechanism.
        for label, value in t.savings.summary_rows():
            table.add_row(label, value)
        if t.unmodelled_jobs:
            table.add_row("  jobs with no saving modelled",
                          f"{t.unmodelled_jobs} (no calibration: run `penny calibrate MODEL`)")
        table.add_section()
        table.add_row("jobs (succeeded / failed)", f"{t.jobs} ({t.succeeded} / {t.failed})")
        table.add_row("input tokens (cached)", f"{t.input_tokens} ({t.cached_tokens}, "
                                                f"{t.cached_share:.0%})")
        table.add_row("output tokens", str(t.output_tokens))
        table.add_row("served by the exact result cache (saved)",
                      f"{t.exact_cache_jobs} (${t.cache_saved_usd:.6f})")
        table.add_row("engine seconds", f"{t.engine_seconds:.2f}")
        if t.engine_seconds:
            rate = t.output_tokens / t.engine_seconds
            table.add_row("output tokens / engine second", f"{rate:.1f}")
        table.add_section()
        # Secondary: a hosted API's list price for the same tokens is another model on
        # other hardware, so it is a comparison, not a saving penny made.
        list_line = f"${t.list_cost_usd:.6f}"
        if t.list_cost_usd:
            versus = (t.list_cost_usd - t.cost_usd) / t.list_cost_usd
            list_line += f" (engine cost is {versus:.0%} below it)"
        table.add_row("for comparison: same tokens at a hosted list price", list_line)
        table.add_row("engine start-up seconds", f"{self.engine_startup_seconds:.1f}")
        table.add_row("wall seconds", f"{wall_seconds:.1f}")
        console.print(table)
        for name, uri in sorted(self.outputs.items()):
            print(f"{name}: {uri}")  # plain print: a URI must not be wrapped


def _queue_csv(settings: Settings, runtime: Runtime, path: Path, options: CsvOptions
               ) -> tuple[Submission, int]:
    """Stream a CSV file from disk into one submission, as an upload is (memory flat in
    its size); the submission and how many jobs it holds."""
    with runtime.sessions() as session, path.open("rb") as stream:
        tenant = ensure_tenant(session, CLI_TENANT)
        queued = queue_csv(session, CsvSource(stream, path.name, options,
                                              settings.max_prompt_chars),
                           tenant=tenant, limits=IntakeLimits.from_settings(settings),
                           policy=IntakePolicy(), cache=cache_policy(settings),
                           caps=_caps(session, settings, tenant), kind="file")
    return queued.submission, queued.rows


def _caps(session: Session, settings: Settings, tenant: TenantRef) -> JobCaps:
    """The tenant's max_tokens caps, read once for the file."""
    return JobCaps(caps_of(session, tenant.id), settings.report_feature_tag)


def _csv_digest(settings: Settings, path: Path, options: CsvOptions) -> str:
    """The CSV file's content hash, as its submission stores it (`CsvSource.digest`)."""
    with path.open("rb") as stream:
        return CsvSource(stream, path.name, options, settings.max_prompt_chars).digest()


def _check_csv(settings: Settings, path: Path, options: CsvOptions) -> None:
    """Read the CSV file once before starting anything, holding only its errors: a file
    to be refused is refused at once, naming every bad row."""
    with path.open("rb") as stream:
        errors: list[LineError] = []
        rows = 0
        for outcome in read_csv(stream, path.name, options, settings.max_prompt_chars):
            rows += 1
            if isinstance(outcome, LineError) and len(errors) < MAX_REPORTED_ERRORS:
                errors.append(outcome)
    fatal = any(e.code == BAD_FILE for e in errors)
    if errors and (fatal or not options.skip_bad_rows):
        raise refuse_bad_rows(path.name, errors, rows, MAX_REPORTED_ERRORS)
    if not rows:
        raise InputFileError(f"{path.name} holds no jobs")


def run_file(settings: Settings, path: Path, options: CsvOptions | None = None) -> RunSummary:
    from workers.vllm_engine import VllmEngine

    options = options or CsvOptions()
    is_csv = path.name.lower().endswith(".csv")
    jobs: list[NewJob] = []
    if is_csv:
        _check_csv(settings, path, options)
        content_hash = _csv_digest(settings, path, options)
    else:
        outcomes = parse_input_file(path.name, path.read_bytes(), settings.max_json_depth)
        jobs = jobs_for_file(outcomes, IntakeLimits.from_settings(settings))
        # The same file (name and bytes) hashes the same: a run killed midway is finished
        # by the next run of that file instead of run again from the start.
        with path.open("rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
        content_hash = request_hash([path.name, digest])
    runtime = open_runtime(settings)
    try:
        with runtime.sessions() as session:
            tenant = ensure_tenant(session, CLI_TENANT)
            left = find_unfinished(session, tenant.id, "file", content_hash)
            session.commit()
        if left is not None:
            submission_id, tenant_id, total = left.id, left.tenant_id, left.total_jobs
            print(f"penny run: finishing submission {submission_id}, left unfinished by an "
                  f"earlier run of {path.name}", file=sys.stderr)
        elif is_csv:
            queued, total = _queue_csv(settings, runtime, path, options)
            submission_id, tenant_id = queued.id, queued.tenant_id
        else:
            with runtime.sessions() as session:
                jobs = _caps(session, settings, tenant).jobs(jobs)
                stored = submit(session, tenant=tenant, kind="file", jobs=jobs,
                                payload_hash=content_hash, source_name=path.name,
                                cache=cache_policy(settings))
            submission_id, tenant_id = stored.submission.id, stored.submission.tenant_id
            total = len(jobs)
        # Only models with jobs left to run start an engine: a file the result cache
        # answered whole needs none.
        with runtime.sessions() as session:
            models_needed = unfinished_models(session, submission_id)
        engines = [VllmEngine(settings, model) for model in models_needed]
        for engine in engines:
            calibrate_if_missing(engine, settings, runtime.sessions)
        with InProcessPipeline(runtime, engines) as pipeline, Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(),
        ) as progress:
            task = progress.add_task(path.name, total=total)
            finalize_ready(runtime.sessions, runtime.store, [submission_id])
            while True:
                with runtime.sessions() as session:
                    counts = status_counts(session, submission_id)
                    row = get_submission(session, tenant_id, submission_id)
                    done = row is not None and row.status == "completed"
                progress.update(task, completed=total - count_unfinished(counts))
                if done:
                    break
                stopped = sorted(set(models_needed) - set(pipeline.live_models()))
                if stopped:  # its engine broke: nothing would ever finish the rest
                    raise EngineStopped(
                        f"the engine for {', '.join(stopped)} stopped working; the "
                        "unfinished jobs are kept: run the same file again to finish them")
                time.sleep(0.2)
        with runtime.sessions() as session:
            records = job_records(session, submission_id)
            row = get_submission(session, tenant_id, submission_id)
            outputs = dict(row.outputs or {}) if row else {}
        return RunSummary(
            submission_id=str(submission_id),
            totals=totals(records),
            outputs=outputs,
            engine_startup_seconds=sum(e.startup_seconds for e in engines),
        )
    finally:
        runtime.close()
