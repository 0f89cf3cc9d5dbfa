"""Reports on a real Postgres: jobs go in through the API, batches are recorded through the
worker's own recording code with scripted generations (the engine is the one part left
out; the e2e tests run it), and the reports read the rollup the ledger's trigger keeps.
Totals equal the sum of the ledger rows to the cent; a tenant sees only its own."""

from __future__ import annotations

import importlib.util
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from typer.testing import CliRunner

from api.app import create_app
from cache.model_identity import cache_policy
from coalescer.planning import PlannedBatch
from ledger.attribution import SAVING_COLUMNS
from ledger.output_histogram import bucket_of
from models.costing import MeasuredSpeed, store_calibration
from models.queue import (
    ClaimedBatch,
    claim_batch,
    claim_queued_jobs,
    create_batches,
    record_batch,
)
from models.tables import Job, LedgerEntry, Tenant
from penny.cli import app as cli_app
from penny.runtime import Runtime, open_runtime
from tests.support import REPO, make_settings, reset_tables
from workers.engine import Generation
from workers.execution import outcomes_for
from workers.ledger_costing import LedgerCosting

ACME = {"Authorization": "Bearer key-acme"}
BETA = {"Authorization": "Bearer key-beta"}
ADMIN = {"Authorization": "Bearer admin-key"}
SPEED = MeasuredSpeed(request_overhead_s=0.02, prefill_s_per_token=0.0002,
                      decode_s_per_token_bs1=0.02, decode_s_per_token_full=0.002,
                      full_batch_jobs=64, machine={"cpus": 2}, engine_settings={},
                      samples=[])


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[tuple[Runtime, TestClient]]:
    settings = make_settings(tmp_path, database_url,
                             api_keys={"key-acme": "acme", "key-beta": "beta"},
                             admin_api_keys=["admin-key"], report_caps_cache_seconds=0)
    runtime = open_runtime(settings)
    reset_tables(runtime)
    with runtime.sessions() as session:
        store_calibration(session, settings.default_model, SPEED)
    try:
        with TestClient(create_app(runtime)) as client:
            yield runtime, client
    finally:
        runtime.close()


def scripted(request: dict[str, Any]) -> Generation:
    """The answer makes as many tokens as the question's `n=` says, up to max_tokens."""
    content = request["messages"][-1]["content"]
    if content.startswith("broken"):  # the engine worked on it, then failed
        return Generation(key="", prompt_tokens=30, cached_tokens=0, output_tokens=4,
                          error_code="engine_error", error_message="it broke", ran=True)
    if content.startswith("refused"):  # refused before it ran
        return Generation(key="", prompt_tokens=30, error_code="invalid_request",
                          error_message="no")
    wanted = int(re.search(r"n=(\d+)", content).group(1))  # type: ignore[union-attr]
    limit = int(request["sampling"]["max_tokens"])
    made = min(wanted, limit)
    return Generation(key="", text="x" * made, finish_reason="length" if made == limit
                      else "stop", prompt_tokens=30, cached_tokens=0, output_tokens=made)


def run_queued(runtime: Runtime) -> None:
    """Claim every queued job into one batch and record it as the worker does."""
    settings = runtime.settings
    model = settings.default_model
    with runtime.sessions() as session:
        rows = claim_queued_jobs(session, model, 1000, timedelta(0))
        plan = PlannedBatch(model=model, job_ids=tuple(r.job.id for r in rows),
                            estimated_tokens=0)
        [batch_id] = create_batches(session, [plan], [None])
        session.commit()
    with runtime.sessions() as session:
        batch: ClaimedBatch | None = claim_batch(session, batch_id, "scripted-worker", 30)
    assert batch is not None
    outcomes = outcomes_for(batch, [scripted(job.request) for job in batch.jobs], 0.5,
                            settings)
    costed = LedgerCosting(settings, runtime.sessions).cost(batch, outcomes)
    with runtime.sessions() as session:
        assert record_batch(session, batch, costed, 0.5, cache_policy(settings, [model]))


def post(client: TestClient, headers: dict[str, str], content: str, max_tokens: int = 32,
         feature: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": content}],
                            "max_tokens": max_tokens, **extra}
    if feature is not None:
        body["metadata"] = {"feature": feature}
    response = client.post("/v1/jobs", headers=headers, json=body)
    assert response.status_code in (200, 202), response.text
    return dict(response.json())


def ledger_rows(runtime: Runtime) -> list[LedgerEntry]:
    with runtime.sessions() as session:
        found = list(session.execute(select(LedgerEntry)).scalars())
        session.expunge_all()
    return found


def test_costs_by_every_grouping_add_up_to_the_ledger_to_the_cent(
    served: tuple[Runtime, TestClient],
) -> None:
    runtime, client = served
    for i in range(5):
        post(client, ACME, f"summary {i} n={4 + i}", feature="summaries")
    for i in range(3):
        post(client, ACME, f"chat {i} n={10 + i}", feature="chat")
    post(client, ACME, "untagged n=3")
    post(client, BETA, "beta n=7", feature="summaries")
    run_queued(runtime)
    post(client, ACME, "summary 0 n=4", feature="summaries")  # an exact cache hit

    rows = ledger_rows(runtime)
    assert len(rows) == 11
    everything = client.get("/v1/reports/costs", headers=ADMIN,
                            params={"group_by": "tenant"}).json()
    assert Decimal(everything["totals"]["cost_usd"]) == sum(r.cost_usd for r in rows)
    assert Decimal(everything["totals"]["naive_cost_usd"]) == sum(r.naive_cost_usd
                                                                  for r in rows)
    for column in SAVING_COLUMNS:
        mechanism = column.removeprefix("saving_").removesuffix("_usd")
        assert Decimal(everything["totals"]["savings_by_mechanism_usd"][mechanism]) == sum(
            getattr(r, column) for r in rows)
    assert everything["totals"]["requests"] == 11
    assert everything["totals"]["output_tokens"] == sum(r.output_tokens for r in rows)
    assert {line["tenant"] for line in everything["data"]} == {"acme", "beta"}

    for grouping in ("tenant", "model", "feature", "day"):
        report = client.get("/v1/reports/costs", headers=ADMIN,
                            params={"group_by": grouping}).json()
        for money in ("cost_usd", "naive_cost_usd", "unexplained_usd"):
            assert sum(Decimal(line[money]) for line in report["data"]) == Decimal(
                report["totals"][money]), (grouping, money)
        assert sum(line["requests"] for line in report["data"]) == 11

    acme = client.get("/v1/reports/costs", headers=ACME,
                      params={"group_by": "feature"}).json()
    by_feature = {line["feature"]: line for line in acme["data"]}
    assert set(by_feature) == {"summaries", "chat", ""}
    assert by_feature["summaries"]["requests"] == 6
    assert by_feature["summaries"]["served_by"]["exact_cache"] == 1
    acme_rows = [r for r in rows if r.tenant_id == tenant_id(runtime, "acme")]
    assert Decimal(acme["totals"]["cost_usd"]) == sum(r.cost_usd for r in acme_rows)
    per_request = Decimal(acme["totals"]["cost_per_request_usd"])
    assert per_request == sum(r.cost_usd for r in acme_rows) / 10

    drivers = client.get("/v1/reports/top-drivers", headers=ACME,
                         params={"limit": 2}).json()["data"]
    costliest = sorted(by_feature.values(), key=lambda line: -Decimal(line["cost_usd"]))[:2]
    assert [(d["feature"], d["cost_usd"]) for d in drivers] == [
        (line["feature"], line["cost_usd"]) for line in costliest]
    assert Decimal(drivers[0]["cost_usd"]) >= Decimal(drivers[1]["cost_usd"])


def tenant_id(runtime: Runtime, name: str) -> uuid.UUID:
    with runtime.sessions() as session:
        found: uuid.UUID = session.execute(
            select(Tenant.id).where(Tenant.name == name)).scalar_one()
    return found


def test_a_tenant_sees_only_its_own_and_bad_windows_are_400(
    served: tuple[Runtime, TestClient],
) -> None:
    runtime, client = served
    post(client, ACME, "a n=3", feature="f")
    post(client, BETA, "b n=3", feature="f")
    run_queued(runtime)
    mine = client.get("/v1/reports/costs", headers=BETA).json()
    assert mine["tenant"] == "beta" and mine["totals"]["requests"] == 1
    assert client.get("/v1/reports/costs", headers=BETA,
                      params={"tenant": "acme"}).status_code == 404
    assert client.get("/v1/reports/costs", headers=ADMIN,
                      params={"tenant": "acme"}).json()["totals"]["requests"] == 1
    assert client.get("/v1/reports/costs", headers=ADMIN,
                      params={"tenant": "nobody"}).status_code == 404
    assert client.get("/v1/reports/costs", headers=ACME, params={
        "start": "2026-02-01", "end": "2026-01-01"}).status_code == 422
    assert client.get("/v1/reports/costs", headers=ACME, params={
        "group_by": "colour"}).status_code in (400, 422)
    # A day is written YYYY-MM-DD: a number is not read as a Unix time.
    for path, param in (("/v1/reports/max-tokens-audit", "end"), ("/v1/reports/costs", "start")):
        for day in ("0.0", "1700000000", "2026-1-5"):
            answer = client.get(path, headers=ACME, params={param: day})
            assert answer.status_code == 422, (path, day, answer.text)
    assert client.get("/v1/reports/max-tokens-audit", headers=ACME,
                      params={"end": "2026-01-05"}).status_code == 200
    assert client.get("/v1/reports/costs").status_code == 401


def test_compare_shows_a_cheaper_current_window(served: tuple[Runtime, TestClient]) -> None:
    runtime, client = served
    post(client, ACME, "a n=5", feature="f")
    run_queued(runtime)
    report = client.get("/v1/reports/compare", headers=ACME, params={
        "baseline_start": "2020-01-01", "baseline_end": "2020-01-31",
        "current_start": "2026-01-01",
        "current_end": _tomorrow()}).json()
    changes = {c["measure"]: c for c in report["changes"]}
    assert report["baseline"]["requests"] == 0 and report["current"]["requests"] == 1
    assert changes["requests"]["baseline"] == 0 and changes["requests"]["current"] == 1
    assert changes["cost_per_request_usd"]["baseline"] is None
    assert changes["length_rate"]["current"] == 0.0


def _tomorrow() -> str:
    return (datetime.now(UTC).date() + timedelta(days=1)).isoformat()


def test_the_max_tokens_audit_recommends_a_cap_that_intake_then_applies(
    served: tuple[Runtime, TestClient],
) -> None:
    runtime, client = served
    # 100 jobs ask for 256 tokens and make 1..100, one more makes 300 and is cut at 256.
    # Read from the output-token buckets: p50 (51) as the top of its bucket 49-52, p99
    # (100) as the largest count seen in its bucket 97-104; the recommendation 100 x 1.25
    # rounded up to 16 = 128, an edge, so the one job past it is counted exactly.
    for i in range(1, 101):
        post(client, ACME, f"q{i} n={i}", max_tokens=256, feature="tagging")
    post(client, ACME, "long n=300", max_tokens=256, feature="tagging")  # cut at 256
    run_queued(runtime)
    audit = client.get("/v1/reports/max-tokens-audit", headers=ACME).json()
    [line] = audit["data"]
    assert line["feature"] == "tagging" and line["jobs"] == 101
    assert line["length_jobs"] == 1
    assert line["output_tokens"]["p50"] == 52 and line["output_tokens"]["p99"] == 100
    assert line["requested_max_tokens"] == {"p50": 256, "max": 256}
    assert line["recommended_max_tokens"] == 128
    assert line["cut_jobs"] == 1 and line["excess_output_tokens"] == 256 - 128
    assert Decimal(line["estimated_saving_usd"]) > 0

    cap = client.put("/v1/max-tokens-caps", headers=ACME,
                     json={"feature": "tagging", "recommended": True})
    assert cap.status_code == 200, cap.text
    assert cap.json()["max_tokens"] == 128
    assert client.put("/v1/max-tokens-caps", headers=ACME,
                      json={"feature": "tagging"}).status_code == 422
    assert client.get("/v1/max-tokens-caps", headers=BETA).json()["data"] == []

    capped = post(client, ACME, "again n=200", max_tokens=256, feature="tagging")
    uncapped = post(client, ACME, "other n=200", max_tokens=256, feature="other")
    with runtime.sessions() as session:
        stored = {str(j.id): j.request["sampling"] for j in session.execute(
            select(Job).where(Job.id.in_([capped["id"], uncapped["id"]]))).scalars()}
    assert stored[capped["id"]]["max_tokens"] == 128
    assert stored[capped["id"]]["requested_max_tokens"] == 256
    assert "requested_max_tokens" not in stored[uncapped["id"]]
    run_queued(runtime)
    job = client.get(f"/v1/jobs/{capped['id']}", headers=ACME).json()
    assert job["result"]["finish_reason"] == "length"  # cut by the cap, for all to see
    assert job["max_tokens"] == {"requested": 256, "applied": 128}
    [row] = [r for r in ledger_rows(runtime) if str(r.job_id) == capped["id"]]
    assert row.output_tokens == 128 and row.saving_output_limit_usd > 0
    audit = client.get("/v1/reports/max-tokens-audit", headers=ACME).json()
    assert {line["feature"]: line["capped_jobs"] for line in audit["data"]} == {
        "tagging": 1, "other": 0}
    assert client.delete("/v1/max-tokens-caps/tagging", headers=BETA).status_code == 404
    assert client.delete("/v1/max-tokens-caps/tagging", headers=ACME).status_code == 200


def test_retry_storms_name_the_repeats_and_what_they_cost(
    served: tuple[Runtime, TestClient],
) -> None:
    runtime, client = served
    for attempt in range(4):  # a retry loop with the cache off: each send runs (or rides)
        response = client.post(
            "/v1/jobs", headers={**ACME, "x-stainless-retry-count": str(attempt)},
            json={"messages": [{"role": "user", "content": "flaky n=9"}], "max_tokens": 16,
                  "metadata": {"feature": "sync"}, "cache": "off"})
        assert response.status_code == 202
    for _ in range(3):
        response = client.post("/v1/jobs", headers={**ACME, "Idempotency-Key": "k-1"},
                               json={"messages": [{"role": "user", "content": "once n=3"}],
                                     "max_tokens": 16})
        assert response.status_code in (200, 202)
    post(client, ACME, "calm n=4", feature="sync")
    run_queued(runtime)

    storms = client.get("/v1/reports/retry-storms", headers=ACME,
                        params={"min_sends": 3}).json()
    [storm] = storms["requests"]
    assert storm["feature"] == "sync" and storm["sends"] == 4 and storm["repeats"] == 3
    assert storm["max_client_retry_count"] == 3
    rows = [r for r in ledger_rows(runtime) if r.output_tokens == 9]
    first = min(rows, key=lambda r: r.created_at)
    assert Decimal(storm["repeats_naive_cost_usd"]) == sum(
        r.naive_cost_usd for r in rows) - first.naive_cost_usd
    assert Decimal(storm["repeats_cost_usd"]) == sum(r.cost_usd for r in rows) - first.cost_usd
    [key] = storms["idempotency_keys"]
    assert key["sends"] == 3 and Decimal(key["repeats_naive_cost_usd"]) > 0
    [retried] = storms["client_retries"]
    assert retried["feature"] == "sync" and retried["retried_jobs"] == 3
    assert client.get("/v1/reports/retry-storms", headers=BETA).json()["requests"] == []


def test_the_cli_prints_the_same_report_and_sets_caps(
    served: tuple[Runtime, TestClient], monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime, client = served
    for i in range(3):
        post(client, ACME, f"q{i} n={5 + i}", feature="summaries")
    run_queued(runtime)
    monkeypatch.setenv("PENNY_DATABASE_URL", runtime.settings.database_url or "")
    monkeypatch.setenv("PENNY_DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.setenv("COLUMNS", "220")  # rich sizes its tables to the terminal
    api = client.get("/v1/reports/costs", headers=ACME).json()["totals"]
    shown = CliRunner().invoke(cli_app, ["report", "costs", "--by", "feature",
                                         "--tenant", "acme"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "summaries" in shown.output
    assert f"${Decimal(api['cost_usd']):.6f}" in shown.output
    assert f"${Decimal(api['naive_cost_usd']):.6f}" in shown.output
    for command in (["drivers"], ["max-tokens"], ["retry-storms"],
                    ["compare", "--baseline-start", "2020-01-01", "--baseline-end",
                     "2020-02-01", "--current-start", "2026-01-01", "--current-end",
                     _tomorrow()]):
        ran = CliRunner().invoke(cli_app, ["report", *command], terminal_width=200)
        assert ran.exit_code == 0, (command, ran.output)
    set_cap = CliRunner().invoke(cli_app, ["report", "caps", "set", "summaries", "--tenant",
                                           "acme", "--max-tokens", "64"])
    assert set_cap.exit_code == 0, set_cap.output
    assert client.get("/v1/max-tokens-caps", headers=ACME).json()["data"][0][
        "max_tokens"] == 64
    missing = CliRunner().invoke(cli_app, ["report", "costs", "--tenant", "nobody"])
    assert missing.exit_code != 0 and "nobody" in missing.output


def test_a_failed_job_bills_what_ran_and_one_refused_before_it_ran_bills_nothing(
    served: tuple[Runtime, TestClient],
) -> None:
    runtime, client = served
    ok = post(client, ACME, "fine n=6", feature="f")
    broken = post(client, ACME, "broken n=6", feature="f")
    refused = post(client, ACME, "refused n=6", feature="f")
    run_queued(runtime)
    rows = {str(r.job_id): r for r in ledger_rows(runtime)}
    assert set(rows) == {ok["id"], broken["id"]}
    row = rows[broken["id"]]
    assert row.outcome == "failed" and row.output_tokens == 4 and row.cost_usd > 0
    assert row.engine_seconds + rows[ok["id"]].engine_seconds == pytest.approx(0.5)
    for job in (broken, refused):
        assert client.get(f"/v1/jobs/{job['id']}", headers=ACME).json()["status"] == "failed"
    totals = client.get("/v1/reports/costs", headers=ACME).json()["totals"]
    assert Decimal(totals["cost_usd"]) == sum(r.cost_usd for r in rows.values())
    assert totals["failed_jobs"] == 2 and totals["failure_rate"] == pytest.approx(2 / 3)


def test_the_feature_tag_is_configurable(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, api_keys={"key-acme": "acme"},
                             report_feature_tag="team", report_caps_cache_seconds=0)
    runtime = open_runtime(settings)
    reset_tables(runtime)
    try:
        with TestClient(create_app(runtime)) as client:
            for team in ("search", "search", "billing"):
                response = client.post("/v1/jobs", headers=ACME, json={
                    "messages": [{"role": "user", "content": f"{team} {uuid.uuid4()} n=5"}],
                    "max_tokens": 32, "metadata": {"team": team, "feature": "ignored"}})
                assert response.status_code == 202
            run_queued(runtime)
            report = client.get("/v1/reports/costs", headers=ACME).json()
            assert report["feature_tag"] == "team"
            assert {line["feature"]: line["requests"] for line in report["data"]} == {
                "search": 2, "billing": 1}
            audit = client.get("/v1/reports/max-tokens-audit", headers=ACME).json()
            assert {line["feature"] for line in audit["data"]} == {"search", "billing"}
    finally:
        runtime.close()


def test_the_database_buckets_counts_as_the_audit_reads_them(
    served: tuple[Runtime, TestClient],
) -> None:
    runtime, _ = served
    counts = [*range(0, 2100), 4095, 4096, 4097, 65_537, 1_000_000, 2**31 - 1]
    with runtime.sessions() as session:
        found = session.execute(
            text("SELECT penny_token_bucket(c) FROM unnest(CAST(:c AS integer[])) c"),
            {"c": counts}).scalars().all()
    assert found == [bucket_of(c) for c in counts]


def test_the_audit_rollups_back_filled_from_the_ledger_answer_as_the_trigger_kept_them(
    served: tuple[Runtime, TestClient],
) -> None:
    runtime, client = served
    for i in range(1, 41):
        post(client, ACME, f"q{i} n={i * 7}", max_tokens=200, feature="tagging")
    for attempt in range(3):
        client.post("/v1/jobs", headers={**ACME, "x-stainless-retry-count": str(attempt)},
                    json={"messages": [{"role": "user", "content": "again n=5"}],
                          "max_tokens": 16, "metadata": {"feature": "sync"}, "cache": "off"})
    run_queued(runtime)
    kept = (client.get("/v1/reports/max-tokens-audit", headers=ACME).json(),
            client.get("/v1/reports/retry-storms", headers=ACME).json())
    [line] = [line for line in kept[0]["data"] if line["feature"] == "tagging"]
    rows = [r for r in ledger_rows(runtime) if r.output_tokens != 5]  # the "sync" ones make 5
    assert line["jobs"] == len(rows) == 40
    assert line["length_jobs"] == sum(1 for r in rows if r.output_tokens == 200)
    assert kept[1]["requests"][0]["sends"] == 3

    migration = importlib.util.spec_from_file_location(
        "audit_rollup", REPO / "migrations" / "versions" / "0028_audit_rollup.py")
    assert migration is not None and migration.loader is not None
    module = importlib.util.module_from_spec(migration)
    migration.loader.exec_module(module)
    with runtime.db.begin() as conn:
        conn.execute(text("TRUNCATE ledger_output_daily, request_sends, request_repeats, "
                          "client_retries_daily"))
        conn.execute(text(module._outputs_insert("ledger_entries", "'feature'")))
        conn.execute(text(module._sends_insert("ledger_entries")))
        conn.execute(text(module._retries_insert("ledger_entries", "'feature'")))
    assert (client.get("/v1/reports/max-tokens-audit", headers=ACME).json(),
            client.get("/v1/reports/retry-storms", headers=ACME).json()) == kept
