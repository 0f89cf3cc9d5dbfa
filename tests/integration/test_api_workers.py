"""`penny api --workers 2`: two forked worker processes serve one port, every accepted job
is in Postgres, /metrics adds up both workers, and SIGTERM stops them all cleanly."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from models.tables import Job
from penny.runtime import Runtime
from tests.support import PennyProcess, free_port, penny_env, wait_for_http, wait_until


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def posts_counted(url: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if (sample.name == "penny_http_requests_total"
                    and sample.labels == {"method": "POST", "route": "/v1/jobs",
                                          "status": "202"}):
                return sample.value
    return 0.0


def test_two_workers_serve_one_port_and_stop_together(runtime: Runtime, tmp_path: Path
                                                      ) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = penny_env(runtime.settings)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # penny makes one for its workers
    with PennyProcess(["api", "--port", str(port), "--workers", "2"], env,
                      tmp_path / "api.log") as api:
        wait_for_http(api, f"{url}/healthz")
        workers = children_of(api.process.pid)
        assert len(workers) == 2, workers
        # A connection each: the kernel spreads new connections over the two workers.
        accepted = []
        for n in range(20):
            with httpx.Client(base_url=url) as client:
                answer = client.post("/v1/jobs", json={"prompt": f"job {n}", "max_tokens": 4})
            assert answer.status_code == 202, answer.text
            accepted.append(answer.json()["id"])
        assert posts_counted(url) == 20  # both workers' counts, added up

        api.process.send_signal(signal.SIGTERM)
        assert api.process.wait(timeout=60) == 0, (tmp_path / "api.log").read_text()

    def gone() -> bool:
        return not any(os.path.exists(f"/proc/{pid}") for pid in workers)

    wait_until(gone, timeout=30, what="the workers to exit")
    with runtime.sessions() as session:
        stored = session.execute(select(func.count()).select_from(Job)
                                 .where(Job.id.in_(accepted))).scalar_one()
    assert stored == 20
