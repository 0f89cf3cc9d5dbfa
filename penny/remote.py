"""Talking to a running penny server from the command line: `penny submit`, `status`,
`watch` and `results`. Plain HTTP against penny's own API; every failure becomes a
`RemoteError` whose message says what to do next."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from intake.csv_mapping import CsvOptions
from intake.files import LineError, ParsedLine, parse_input_file
from penny.errors import InputFileError

OPENAI_BATCH_PREFIX = "batch_"
OPENAI_LINE_KEYS = {"custom_id", "method", "url", "body"}
TERMINAL = {"succeeded", "failed", "cancelled", "expired"}


class RemoteError(Exception):
    """Something the person at the terminal can act on; the message says what. `status`:
    the server's HTTP status, when it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def submission_uuid(raw: str) -> uuid.UUID:
    """A submission id, or an OpenAI batch id (`batch_<hex>`) of the same submission."""
    text = raw.removeprefix(OPENAI_BATCH_PREFIX)
    try:
        return uuid.UUID(text)
    except ValueError:
        raise RemoteError(f"{raw!r} is not a submission id (a UUID) or a batch id "
                          "(batch_...): `penny submit` prints the id") from None


@dataclass(frozen=True)
class Submitted:
    id: str  # what `penny status/watch/results` take
    jobs: int
    kind: str  # "bulk", "csv" or "openai_batch"
    bad_rows: int = 0  # CSV rows stored as failed jobs (--skip-bad-rows)


@dataclass(frozen=True)
class Snapshot:
    """A submission's state as the server reports it."""

    status: str
    total: int
    counts: dict[str, int]
    cost: dict[str, Any]

    @property
    def finished_jobs(self) -> int:
        return sum(n for state, n in self.counts.items() if state in TERMINAL)

    @property
    def failed_jobs(self) -> int:
        return sum(n for state, n in self.counts.items() if state in TERMINAL - {"succeeded"})

    @property
    def done(self) -> bool:
        return self.status in ("completed", "failed")

    @property
    def cost_usd(self) -> Decimal:
        return Decimal(str(self.cost.get("cost_usd", "0")))

    @property
    def saved_usd(self) -> Decimal:
        """Saved against the naive counterfactual (a server without one: vs list price)."""
        return Decimal(str(self.cost.get("saved_vs_naive_usd",
                                         self.cost.get("saved_usd", "0"))))


def is_csv_file(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


def _csv_hint(error: RemoteError, options: CsvOptions) -> str:
    """What to do about a CSV the server refused."""
    if error.status == 413:
        return (f"{error}\nThe server takes CSV files up to its PENNY_MAX_CSV_UPLOAD_BYTES: "
                "split the file, or ask for a larger limit.")
    if error.status == 422 and not options.skip_bad_rows:
        return (f"{error}\nNothing was queued. Fix the rows listed, or pass "
                "--skip-bad-rows to run the good ones (each bad one becomes a failed job "
                "naming its line).")
    return str(error)


def is_openai_batch_file(path: Path, data: bytes) -> bool:
    if not path.name.lower().endswith(".jsonl"):
        return False
    for line in data.decode("utf-8-sig", errors="replace").splitlines():
        if line.strip():
            try:
                first = json.loads(line)
            except json.JSONDecodeError:
                return False
            return isinstance(first, dict) and set(first) >= OPENAI_LINE_KEYS
    return False


class PennyClient:
    def __init__(self, base_url: str, api_key: str | None = None,
                 timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PennyClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise RemoteError(
                f"no penny server answers at {self.base_url} ({error}): start one with "
                "`penny up`, or point --url at it") from None
        if response.status_code >= 400:
            raise RemoteError(self._explain(response), response.status_code)
        return response

    @staticmethod
    def _explain(response: httpx.Response) -> str:
        try:
            error = response.json()["error"]
            message = str(error["message"])
            details = [f"  {d.get('param')}: {d.get('message')}"
                       for d in error.get("details") or []]
        except (ValueError, KeyError, TypeError):
            message, details = response.text[:300], []
        retry_after = response.headers.get("retry-after")
        hint = {401: " Pass your key with --api-key.",
                402: " Ask for a larger budget, or wait for next month.",
                404: " Check the id: `penny submit` printed it.",
                409: " Wait for it: `penny watch ID`.",
                429: f" Try again in {retry_after} s." if retry_after else " Try again later.",
                }.get(response.status_code, "")
        return "\n".join([f"the server said {response.status_code}: {message}.{hint}",
                          *details[:20]])

    def submit_file(self, path: Path, csv: CsvOptions | None = None) -> Submitted:
        """Send a file: a CSV is streamed to `/v1/uploads/csv` (as large as the server
        takes, read with `csv`'s options); JSONL goes to `/v1/jobs/bulk`, or becomes an
        OpenAI batch when its lines are OpenAI batch requests."""
        if is_csv_file(path):
            return self._submit_csv(path, csv or CsvOptions())
        if csv is not None and csv != CsvOptions():
            raise RemoteError(f"{path.name}: --template, --id-column, --encoding and "
                              "--skip-bad-rows read CSV files (named *.csv); leave them out "
                              "for JSONL")
        data = path.read_bytes()
        if is_openai_batch_file(path, data):
            return self._submit_openai_batch(path, data)
        return self._submit_jobs(path, data)

    def _submit_csv(self, path: Path, options: CsvOptions) -> Submitted:
        form = {name: value for name, value in (
            ("template", options.template), ("id_column", options.id_column),
            ("encoding", options.encoding)) if value is not None}
        form["on_bad_rows"] = "skip" if options.skip_bad_rows else "reject"
        with path.open("rb") as stream:
            try:
                # Streamed from disk; the server answers once every row is queued, which
                # for a large file takes a while: no read timeout.
                response = self._request(
                    "POST", "/v1/uploads/csv", data=form,
                    files={"file": (path.name, stream, "text/csv")},
                    timeout=httpx.Timeout(self._http.timeout.connect, read=None))
            except RemoteError as error:
                raise RemoteError(_csv_hint(error, options), error.status) from None
        body = response.json()
        return Submitted(id=str(body["submission_id"]), jobs=int(body["rows"]), kind="csv",
                         bad_rows=int(body["bad_rows"]))

    def _submit_jobs(self, path: Path, data: bytes) -> Submitted:
        try:
            outcomes = parse_input_file(path.name, data)
        except InputFileError as error:
            raise RemoteError(f"{error.message}; penny reads JSONL, CSV with a 'prompt' "
                              "column, or OpenAI batch JSONL") from None
        bad = [o for o in outcomes if isinstance(o, LineError)]
        if bad:
            lines = [f"  line {e.line_no}: {e.message}" for e in bad[:20]]
            more = [f"  ... and {len(bad) - 20} more"] if len(bad) > 20 else []
            raise RemoteError("\n".join([
                f"{path.name}: {len(bad)} bad line(s); nothing was submitted. Fix them, or "
                "use `penny run` (bad lines become failed jobs there):", *lines, *more]))
        jobs = [o.request.model_dump(mode="json", exclude_unset=True)
                for o in outcomes if isinstance(o, ParsedLine)]
        body = self._request("POST", "/v1/jobs/bulk", json={"jobs": jobs}).json()
        return Submitted(id=str(body["submission_id"]), jobs=int(body["count"]), kind="bulk")

    def _submit_openai_batch(self, path: Path, data: bytes) -> Submitted:
        first = json.loads(next(line for line in data.decode("utf-8-sig").splitlines()
                                if line.strip()))
        upload = self._request("POST", "/v1/files", data={"purpose": "batch"},
                               files={"file": (path.name, data, "application/jsonl")}).json()
        batch = self._request("POST", "/v1/batches", json={
            "input_file_id": upload["id"], "endpoint": first["url"],
            "completion_window": "24h"}).json()
        lines = sum(1 for line in data.splitlines() if line.strip())
        return Submitted(id=str(batch["id"]), jobs=lines, kind="openai_batch")

    def snapshot(self, submission: str) -> Snapshot:
        sid = submission_uuid(submission)
        body = self._request("GET", f"/v1/submissions/{sid}").json()
        return Snapshot(status=str(body["status"]), total=int(body["total_jobs"]),
                        counts={str(k): int(v) for k, v in body["counts"].items()},
                        cost=dict(body["penny_cost"]))

    def output(self, submission: str, name: str = "results") -> bytes:
        sid = submission_uuid(submission)
        return self._request("GET", f"/v1/submissions/{sid}/{name}").content

    def wait(self, submission: str, on_snapshot: Callable[[Snapshot], None],
             interval: float = 1.0) -> Snapshot:
        """Poll until the submission is done, handing each snapshot to `on_snapshot`."""
        while True:
            snapshot = self.snapshot(submission)
            on_snapshot(snapshot)
            if snapshot.done:
                return snapshot
            time.sleep(interval)
