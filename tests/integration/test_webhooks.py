"""Webhook delivery against real Postgres and a real HTTP receiver on loopback: batches
that end (cancelled, failed, expired) send exactly one signed event, which the
`standardwebhooks` reference package and the `openai` SDK's `webhooks.unwrap` both verify;
receivers that are down, fail, are slow, redirect or answer 410; the retry schedule, driven
through the delivery loop's clock; the delivery log API. Nothing here needs the engine."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.app import create_app
from delivery.loop import WebhookDeliverer
from delivery.sender import IPAddress
from delivery.signing import new_secret
from intake.limits import IntakeLimits
from intake.validation import validate_next_batch
from models.batches import expire_overdue_batches
from models.tables import Submission, WebhookDelivery
from penny.runtime import Runtime
from penny.settings import Settings
from tests.support import LiveServer, free_port, jsonl, make_settings
from workers.finalize import finalize_ready

SECRET = new_secret()
MODEL = "smollm2-135m-instruct"
HEADERS_A = {"authorization": "Bearer key-a"}
HEADERS_B = {"authorization": "Bearer key-b"}


@dataclass
class Answer:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """A webhook receiver on loopback: records every request, answers as scripted."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[Answer] = []
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        self.received.append((dict(request.headers), body))
        answer = self.answers.pop(0) if self.answers else Answer()
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return Response(status_code=answer.status, headers=answer.headers)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url, webhook_secrets=[SECRET],
                         webhook_allow_loopback=True, webhook_timeout_seconds=1.0,
                         webhook_connect_timeout_seconds=1.0,
                         api_keys={"key-a": "acme", "key-b": "globex"})


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    hook = Receiver()
    with LiveServer(hook.app) as server:
        yield hook, f"{server.url}/hooks/penny"


@pytest.fixture
def api(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as client:
        yield client


def create_batch(api: TestClient, lines: list[Any], headers: dict[str, str] = HEADERS_A,
                 **extra: Any) -> str:
    uploaded = api.post("/v1/files", files={"file": ("in.jsonl", jsonl(lines))},
                        data={"purpose": "batch"}, headers=headers)
    assert uploaded.status_code == 200, uploaded.text
    created = api.post("/v1/batches", headers=headers, json={
        "input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h", **extra})
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


def chat_line(custom_id: str) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                     "max_tokens": 8}}


def validate_and_finalize(runtime: Runtime) -> None:
    """What the coalescer and the sweeper do: validate waiting batches, end finished ones."""
    limits = IntakeLimits.from_settings(runtime.settings)
    while validate_next_batch(runtime.sessions, runtime.store, limits,
                              runtime.settings.max_batch_requests):
        pass
    finalize_ready(runtime.sessions, runtime.store)


def cancelled_batch(runtime: Runtime, api: TestClient, url: str,
                    headers: dict[str, str] = HEADERS_A) -> str:
    batch_id = create_batch(api, [chat_line("a")], headers=headers, callback_url=url)
    assert api.post(f"/v1/batches/{batch_id}/cancel", headers=headers).status_code == 200
    validate_and_finalize(runtime)
    return batch_id


def deliverer(runtime: Runtime, **overrides: Any) -> WebhookDeliverer:
    settings = runtime.settings.model_copy(update=overrides)
    return WebhookDeliverer(settings, runtime.sessions)


def deliveries(runtime: Runtime) -> list[WebhookDelivery]:
    with runtime.sessions() as session:
        return list(session.execute(select(WebhookDelivery)
                                    .order_by(WebhookDelivery.created_at)).scalars())


def test_a_cancelled_batch_sends_one_event_that_both_verifiers_accept(
    runtime: Runtime, api: TestClient, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    batch_id = cancelled_batch(runtime, api, url)
    finalize_ready(runtime.sessions, runtime.store)  # a second finalize adds no event
    report = deliverer(runtime).deliver_due()
    assert (report.attempted, report.delivered) == (1, 1)
    assert len(hook.received) == 1
    headers, body = hook.received[0]

    assert Webhook(SECRET).verify(body, headers)["data"]["id"] == batch_id
    event = openai.OpenAI(api_key="unused").webhooks.unwrap(body, headers, secret=SECRET)
    assert type(event).__name__ == "BatchCancelledWebhookEvent"
    assert event.type == "batch.cancelled" and event.data.id == batch_id
    assert headers["webhook-id"] == event.id and event.id.startswith("evt_")
    assert headers["content-type"] == "application/json"
    with pytest.raises(openai.InvalidWebhookSignatureError):
        openai.OpenAI(api_key="unused").webhooks.unwrap(body, headers, secret=new_secret())

    data = json.loads(body)["data"]
    # Cancelled while it was validating: nothing was queued, nothing ran.
    assert data["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert data["penny_counts"] == {}
    assert data["penny_cost"]["cost_usd"] == "0"
    assert set(data["penny_outputs"]) == {"results", "ledger_json", "ledger_csv"}
    # Delivered: later rounds send nothing, and the outbox holds one row.
    assert deliverer(runtime).deliver_due(datetime.now(UTC) + timedelta(days=2)).attempted == 0
    assert len(hook.received) == 1 and len(deliveries(runtime)) == 1


def test_failed_and_expired_batches_send_their_own_event(
    runtime: Runtime, api: TestClient, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    failed = create_batch(api, [chat_line("a"), "not json"], callback_url=url)
    expired = create_batch(api, [chat_line("b")], metadata={"callback_url": url})
    validate_and_finalize(runtime)  # the first fails validation, the second is queued
    with runtime.sessions() as session:
        session.execute(update(Submission).where(Submission.status == "open")
                        .values(expires_at=func.now() - timedelta(seconds=1)))
        session.commit()
        expire_overdue_batches(session)  # what the sweeper does when a window runs out
    validate_and_finalize(runtime)
    assert deliverer(runtime).deliver_due().delivered == 2
    by_batch = {e["data"]["id"]: e for e in hook.events()}
    assert by_batch[failed]["type"] == "batch.failed"
    assert by_batch[failed]["data"]["penny_validation_errors"] == 1
    assert by_batch[expired]["type"] == "batch.expired"
    assert by_batch[expired]["data"]["penny_counts"] == {"expired": 1}
    for headers, body in hook.received:
        Webhook(SECRET).verify(body, headers)


def test_the_tenant_default_endpoint_is_used_without_a_callback_url(
    runtime: Runtime, api: TestClient, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    assert api.put("/v1/webhooks/endpoint", json={"url": url},
                   headers=HEADERS_A).json()["url"] == url
    assert api.get("/v1/webhooks/endpoint", headers=HEADERS_B).json()["url"] is None
    mine = create_batch(api, [chat_line("a")])
    create_batch(api, [chat_line("a")], headers=HEADERS_B)  # globex has no endpoint
    for batch_id, headers in ((mine, HEADERS_A),):
        api.post(f"/v1/batches/{batch_id}/cancel", headers=headers)
    validate_and_finalize(runtime)
    deliverer(runtime).deliver_due()
    assert [e["data"]["id"] for e in hook.events()] == [mine]


def attempts_counted() -> dict[str, float]:
    """`penny_webhook_attempts_total` by outcome, as this process counts it."""
    return {outcome: REGISTRY.get_sample_value("penny_webhook_attempts_total",
                                               {"outcome": outcome}) or 0.0
            for outcome in ("pending", "delivered", "failed", "disabled")}


def test_retries_follow_the_schedule_with_the_same_webhook_id(
    runtime: Runtime, api: TestClient, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    hook.answers = [Answer(500), Answer(502)]
    cancelled_batch(runtime, api, url)
    loop = deliverer(runtime)
    counted_before = attempts_counted()
    start = datetime.now(UTC)
    assert loop.deliver_due(start).attempted == 1
    first = deliveries(runtime)[0]
    assert first.status == "pending" and first.last_status_code == 500
    assert first.next_attempt_at is not None
    wait = (first.next_attempt_at - start).total_seconds()
    assert 22.5 <= wait <= 37.5  # 30 s +- 25% jitter
    assert loop.deliver_due(start + timedelta(seconds=20)).attempted == 0  # not due yet
    assert loop.deliver_due(first.next_attempt_at).attempted == 1
    second = deliveries(runtime)[0]
    assert second.next_attempt_at is not None
    assert 67.5 <= (second.next_attempt_at - first.next_attempt_at).total_seconds() <= 112.5
    assert loop.deliver_due(second.next_attempt_at).delivered == 1
    ids = {headers["webhook-id"] for headers, _ in hook.received}
    bodies = {body for _, body in hook.received}
    assert len(hook.received) == 3 and len(ids) == 1 and len(bodies) == 1

    log = api.get(f"/v1/webhooks/deliveries/whd_{first.id.hex}", headers=HEADERS_A).json()
    assert log["status"] == "delivered" and log["event"]["id"] in ids
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in log["attempts"]] == [
        (1, 500, "pending"), (2, 502, "pending"), (3, 200, "delivered")]
    counted = attempts_counted()
    assert {outcome: counted[outcome] - counted_before[outcome] for outcome in counted} == {
        "pending": 2, "delivered": 1, "failed": 0, "disabled": 0}
    assert all(a["address"].startswith("127.0.0.1:") for a in log["attempts"])


def test_a_receiver_that_stays_down_is_given_up_after_the_last_attempt(
    runtime: Runtime, api: TestClient
) -> None:
    cancelled_batch(runtime, api, f"http://127.0.0.1:{free_port()}/nobody-listens")
    loop = deliverer(runtime, webhook_max_attempts=3)
    now = datetime.now(UTC)
    for _ in range(3):
        assert loop.deliver_due(now).attempted == 1
        now += timedelta(hours=7)  # past any backoff
    assert loop.deliver_due(now + timedelta(days=30)).attempted == 0
    delivery = deliveries(runtime)[0]
    assert delivery.status == "failed" and delivery.next_attempt_at is None
    assert delivery.last_error is not None and "could not connect" in delivery.last_error


def test_retry_after_is_honoured(
    runtime: Runtime, api: TestClient, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    hook.answers = [Answer(503, headers={"retry-after": "3600"})]
    cancelled_batch(runtime, api, url)
    now = datetime.now(UTC)
    deliverer(runtime).deliver_due(now)
    delivery = deliveries(runtime)[0]
    assert delivery.next_attempt_at == now + timedelta(seconds=3600)


def test_a_slow_receiver_times_out_and_a_redirect_is_not_followed(
    runtime: Runtime, api: TestClient, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    hook.answers = [Answer(200, delay=3.0)]
    cancelled_batch(runtime, api, url)
    now = datetime.now(UTC)
    deliverer(runtime).deliver_due(now)
    delivery = deliveries(runtime)[0]
    assert delivery.status == "pending"
    assert delivery.last_error == "no answer within 1 s"

    hook.answers = [Answer(307, headers={"location": "http://169.254.169.254/"})]
    assert delivery.next_attempt_at is not None
    deliverer(runtime).deliver_due(delivery.next_attempt_at)
    delivery = deliveries(runtime)[0]
    assert delivery.status == "pending" and delivery.last_status_code == 307
    assert delivery.last_error is not None and "not followed" in delivery.last_error
    assert len(hook.received) == 2  # the redirect target was never asked


def test_410_disables_the_endpoint_until_a_retry_through_the_api(
    runtime: Runtime, api: TestClient, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    hook.answers = [Answer(410)]
    cancelled_batch(runtime, api, url)
    deliverer(runtime).deliver_due()
    cancelled_batch(runtime, api, url)  # a later event for the same endpoint
    assert deliverer(runtime).deliver_due().attempted == 0
    gone, skipped = deliveries(runtime)
    assert (gone.status, skipped.status) == ("disabled", "disabled")
    assert len(hook.received) == 1

    retried = api.post(f"/v1/webhooks/deliveries/whd_{skipped.id.hex}/retry",
                       headers=HEADERS_A)
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    assert deliverer(runtime).deliver_due().delivered == 1
    assert [d.status for d in deliveries(runtime)] == ["disabled", "delivered"]
    assert len(hook.received) == 2


def test_the_delivery_log_is_per_tenant(
    runtime: Runtime, api: TestClient, receiver: tuple[Receiver, str]
) -> None:
    _, url = receiver
    first = cancelled_batch(runtime, api, url)
    cancelled_batch(runtime, api, url)
    deliverer(runtime).deliver_due()
    everything = api.get("/v1/webhooks/deliveries", headers=HEADERS_A).json()
    assert len(everything["data"]) == 2 and not everything["has_more"]
    one = api.get("/v1/webhooks/deliveries", params={"submission_id": first},
                  headers=HEADERS_A).json()["data"]
    assert len(one) == 1 and one[0]["status"] == "delivered"
    page = api.get("/v1/webhooks/deliveries", params={"limit": 1},
                   headers=HEADERS_A).json()
    after = api.get("/v1/webhooks/deliveries", params={"limit": 1,
                                                      "after": page["data"][0]["id"]},
                    headers=HEADERS_A).json()
    assert page["has_more"] and {page["data"][0]["id"], after["data"][0]["id"]} == {
        d["id"] for d in everything["data"]}

    assert api.get("/v1/webhooks/deliveries", headers=HEADERS_B).json()["data"] == []
    delivery_id = one[0]["id"]
    for method, path in (("get", f"/v1/webhooks/deliveries/{delivery_id}"),
                         ("post", f"/v1/webhooks/deliveries/{delivery_id}/retry")):
        other = api.request(method, path, headers=HEADERS_B)
        assert other.status_code == 404 and other.json()["error"]["param"] == "delivery_id"
    assert api.get("/v1/webhooks/deliveries", params={"submission_id": "nope"},
                   headers=HEADERS_A).status_code == 422


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/jobs/bulk", {"jobs": [{"prompt": "hi"}], "callback_url": "http://127.1:9/"},
     "callback_url"),
    ("/v1/webhooks/endpoint", {"url": "http://[::ffff:169.254.169.254]/"}, "url"),
    ("/v1/webhooks/endpoint", {"url": "http://localhost:9/"}, "url"),
])
def test_registration_refuses_unsafe_urls(
    tmp_path: Path, database_url: str, path: str, body: dict[str, Any], param: str
) -> None:
    from penny.runtime import open_runtime
    from tests.support import reset_tables

    runtime = open_runtime(make_settings(tmp_path, database_url))  # loopback not allowed
    reset_tables(runtime)
    try:
        with TestClient(create_app(runtime)) as client:
            response = client.request("PUT" if "endpoint" in path else "POST", path,
                                      json=body)
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "unsafe_url"
            assert response.json()["error"]["param"] == param
            # Same for a batch, in the body or in its metadata; nothing is stored.
            batch = create_batch_refused(client, "http://0x7f.1:9/")
            assert batch == ("unsafe_url", "callback_url")
            meta = create_batch_refused(client, None, metadata={"callback_url": "http://[::1]/"})
            assert meta == ("unsafe_url", "metadata.callback_url")
        with runtime.sessions() as session:
            assert session.execute(select(func.count()).select_from(Submission)).scalar() == 0
    finally:
        runtime.close()


def create_batch_refused(client: TestClient, url: str | None, **extra: Any
                         ) -> tuple[str, str]:
    uploaded = client.post("/v1/files", files={"file": ("in.jsonl", jsonl([chat_line("a")]))},
                           data={"purpose": "batch"})
    body = {"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions",
            "completion_window": "24h", **extra}
    if url:
        body["callback_url"] = url
    response = client.post("/v1/batches", json=body)
    assert response.status_code == 422, response.text
    return response.json()["error"]["code"], response.json()["error"]["param"]


class FakeDns:
    """DNS at the network edge: fixed answers per name, and a count of lookups."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        replies = self.answers[host]
        reply = replies[min(len(self.lookups) - 1, len(replies) - 1)]
        return [ipaddress.ip_address(a) for a in reply]


def test_the_connection_goes_to_the_checked_address_with_the_original_host(
    runtime: Runtime, api: TestClient, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    port = url.split(":")[2].split("/")[0]
    # hooks.example is no real name: the request can only arrive through the checked
    # address. A second lookup would answer an inside address (rebinding); there is none.
    dns = FakeDns({"hooks.example": [["127.0.0.1"], ["10.0.0.7"]]})
    cancelled_batch(runtime, api, f"http://hooks.example:{port}/hooks/penny")
    loop = WebhookDeliverer(runtime.settings, runtime.sessions, resolver=dns)
    assert loop.deliver_due().delivered == 1
    assert dns.lookups == ["hooks.example"]
    headers, body = hook.received[0]
    assert headers["host"] == f"hooks.example:{port}"
    Webhook(SECRET).verify(body, headers)


def test_https_verifies_the_certificate_against_the_registered_name(
    runtime: Runtime, api: TestClient, tmp_path: Path
) -> None:
    import threading
    import time

    import trustme
    import uvicorn

    ca = trustme.CA()
    cert = ca.issue_cert("hooks.example")
    cert_file, ca_file = tmp_path / "server.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    ca.cert_pem.write_to_path(str(ca_file))
    hook = Receiver()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(hook.app, host="127.0.0.1", port=port,  # type: ignore[arg-type]
                                           log_level="warning", ssl_certfile=str(cert_file)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        dns = FakeDns({"hooks.example": [["127.0.0.1"]], "other.example": [["127.0.0.1"]]})
        cancelled_batch(runtime, api, f"https://hooks.example:{port}/hook")
        cancelled_batch(runtime, api, f"https://other.example:{port}/hook")
        settings = runtime.settings.model_copy(update={"webhook_ca_file": ca_file})
        report = WebhookDeliverer(settings, runtime.sessions, resolver=dns).deliver_due()
        assert (report.attempted, report.delivered) == (2, 1)
        by_url = {d.url: d for d in deliveries(runtime)}
        assert by_url[f"https://hooks.example:{port}/hook"].status == "delivered"
        wrong = by_url[f"https://other.example:{port}/hook"]
        assert wrong.status == "pending" and wrong.last_error is not None
        assert "certificate" in wrong.last_error.lower()
        headers, body = hook.received[0]
        assert len(hook.received) == 1 and headers["host"] == f"hooks.example:{port}"
        Webhook(SECRET).verify(body, headers)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
