"""The SSRF guard at delivery time: callback URLs that slipped past registration (stored
before the guard, or a name that resolves inside only now) are refused before any
connection. A loopback sink counts every connection it accepts: with loopback not allowed,
a corpus of address forms that all point at this machine (or inside) reaches it zero
times; the same sink with loopback allowed does count, so the zero means something."""

from __future__ import annotations

import contextlib
import ipaddress
import selectors
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from delivery.loop import WebhookDeliverer
from delivery.sender import IPAddress
from delivery.signing import new_secret
from models.submissions import insert_submission
from models.tables import WebhookAttempt, WebhookDelivery
from models.tenants import ensure_tenant
from penny.runtime import Runtime
from workers.finalize import finalize_ready


class Sink:
    """Listening sockets on 127.0.0.1 and ::1 (one port) that count accepted connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self.listeners = [socket.create_server(("127.0.0.1", 0))]
        self.port = self.listeners[0].getsockname()[1]
        with contextlib.suppress(OSError):  # no IPv6 loopback: the IPv4 one still counts
            self.listeners.append(socket.create_server(("::1", self.port),
                                                       family=socket.AF_INET6))
        self.selector = selectors.DefaultSelector()
        for listener in self.listeners:
            listener.setblocking(False)
            self.selector.register(listener, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.selector.select(timeout=0.05):
                connection, _ = key.fileobj.accept()  # type: ignore[union-attr]
                self.accepted += 1
                connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for listener in self.listeners:
            listener.close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    counting = Sink()
    yield counting
    counting.close()


def corpus(port: int) -> list[str]:
    """Forms of this machine's address (and a few inside ones), each with the sink's port."""
    hosts = [
        "127.0.0.1", "127.1", "127.0.1", "2130706433", "0177.0.0.1", "0x7f.1", "0x7f000001",
        "017700000001", "0x7F.0x0.0x0.0x1", "127.000.000.001", "127.0.0.1.", "127.255.255.254",
        "0.0.0.0", "0", "localhost", "LOCALHOST.", "sub.localhost",
        "[::1]", "[0:0:0:0:0:0:0:1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
        "[::127.0.0.1]", "[::ffff:0:127.0.0.1]", "[64:ff9b::127.0.0.1]", "[2002:7f00:1::]",
        "[::]", "[fe80::1%25lo]", "10.0.0.1", "192.168.0.1", "172.16.0.1", "100.64.0.1",
        "169.254.169.254", "[fd00:ec2::254]", "[fc00::1]", "224.0.0.1",
        # Names: the DNS below answers each with an inside address.
        "rebind.example", "mapped.example", "six.example", "metadata.example",
    ]
    return [f"http://{host}:{port}/hook" for host in hosts]


INSIDE_ANSWERS = {
    "rebind.example": ["93.184.216.34", "127.0.0.1"],  # one inside answer is enough
    "mapped.example": ["::ffff:127.0.0.1"],
    "six.example": ["::1"],
    "metadata.example": ["169.254.169.254"],
}


class InsideDns:
    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in INSIDE_ANSWERS[host]]


def store_callbacks(runtime: Runtime, urls: list[str]) -> None:
    """Submissions whose callback URLs were never checked (as if stored before the guard),
    ended by finalize as any other."""
    with runtime.sessions() as session:
        tenant = ensure_tenant(session, "default")
        for index, url in enumerate(urls):
            insert_submission(session, tenant_id=tenant.id, kind="bulk",
                              request_hash=f"h{index}", jobs=[], idempotency_key=None,
                              columns={"callback_url": url})
        session.commit()
    finalize_ready(runtime.sessions, runtime.store)


def test_no_form_of_an_inside_address_reaches_the_sink(runtime: Runtime, sink: Sink) -> None:
    urls = corpus(sink.port)
    assert len(urls) >= 30
    store_callbacks(runtime, urls)
    settings = runtime.settings.model_copy(update={
        "webhook_secrets": [new_secret()], "webhook_allow_loopback": False,
        "webhook_batch_size": 100})
    report = WebhookDeliverer(settings, runtime.sessions, resolver=InsideDns()).deliver_due()
    assert report.attempted == len(urls) and report.delivered == 0
    assert sink.accepted == 0
    with runtime.sessions() as session:
        attempts = session.execute(
            select(WebhookDelivery.url, WebhookAttempt.error, WebhookAttempt.address)
            .join(WebhookAttempt, WebhookAttempt.delivery_id == WebhookDelivery.id)).all()
    assert sorted(url for url, _, _ in attempts) == sorted(urls)
    for url, error, address in attempts:
        assert error is not None and error.startswith("refused: "), (url, error)
        assert address is None, url  # nothing was connected to


def test_the_sink_counts_when_loopback_is_allowed(runtime: Runtime, sink: Sink) -> None:
    store_callbacks(runtime, [f"http://127.0.0.1:{sink.port}/hook"])
    settings = runtime.settings.model_copy(update={
        "webhook_secrets": [new_secret()], "webhook_allow_loopback": True})
    WebhookDeliverer(settings, runtime.sessions).deliver_due(datetime.now(UTC))
    assert sink.accepted == 1
