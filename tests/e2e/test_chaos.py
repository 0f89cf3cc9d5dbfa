"""The chaos test: over a thousand jobs of three tenants through penny's real processes
while workers are SIGKILLed twice, Redis loses everything and restarts, the coalescer is
SIGKILLed, and Postgres crashes and restarts. Nothing may be lost, run into a second
result, billed twice or seen by another tenant; executions repeated by the kills are
counted and printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import ChaosPlan, ChaosRun

pytestmark = pytest.mark.engine


@pytest.mark.timeout(1800)
def test_every_job_ends_once_through_kills_and_restarts(tmp_path: Path) -> None:
    plan = ChaosPlan(tenants=3, jobs_per_tenant=334, waves=4, max_tokens=2)
    report = ChaosRun(plan, tmp_path / "chaos").run()
    print("\n" + report.table())

    assert report.submitted == report.jobs == 1002
    assert report.by_status == {"succeeded": 1002}, report.table()
    assert report.lost == 0
    assert report.duplicate_results == 0
    assert report.double_billed == 0
    assert report.unbilled == 0
    assert report.cross_tenant == 0
    # The kills happened while work was in flight: some executions were repeated, and
    # every repeat ended in one result and one ledger row (checked above).
    assert report.duplicate_executions > 0
