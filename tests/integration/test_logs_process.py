"""`penny api --log-format json`: every line the process writes, uvicorn's included, is a
JSON object naming the role."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from penny.runtime import Runtime
from tests.support import PennyProcess, free_port, penny_env, wait_for_http


def test_api_process_logs_one_json_object_per_line(runtime: Runtime, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "api.log"
    with PennyProcess(["api", "--port", str(port), "--log-format", "json"],
                      penny_env(runtime.settings, PENNY_API_ACCESS_LOG="true"),
                      log_path) as api:
        wait_for_http(api, f"{url}/healthz")
        assert httpx.get(f"{url}/v1/jobs/not-a-job").status_code == 404
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert lines, "the API logged nothing"
    assert {line["role"] for line in lines} == {"api"}
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert any("/v1/jobs/not-a-job" in str(line["message"]) and "404" in str(line["message"])
               for line in access), access
    assert any("Uvicorn running on" in str(line["message"]) for line in lines)


def test_api_process_writes_no_access_log_unless_asked(runtime: Runtime,
                                                       tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "api.log"
    with PennyProcess(["api", "--port", str(port), "--log-format", "json"],
                      penny_env(runtime.settings), log_path) as api:
        wait_for_http(api, f"{url}/healthz")
        assert httpx.get(f"{url}/v1/jobs/not-a-job").status_code == 404
        # The request is counted all the same.
        scraped = httpx.get(f"{url}/metrics").text
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert any("Uvicorn running on" in str(line["message"]) for line in lines)
    assert not [line for line in lines if line["logger"] == "uvicorn.access"]
    assert any(line.startswith("penny_http_requests_total{")
               and 'route="/v1/jobs/{job_id}"' in line and 'status="404"' in line
               for line in scraped.splitlines()), scraped
