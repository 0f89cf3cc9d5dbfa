"""The delivery loop: the I/O shell that claims due deliveries from the Postgres outbox,
posts them (concurrently, each with its own deadline), logs every attempt and schedules
what comes next. The coalescer role runs it on a thread of its own (embedded: the
in-process pipeline), so a slow receiver never holds up a window."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.orm import Session, sessionmaker

from delivery.schedule import AttemptResult, RetryPolicy, decide, parse_retry_after
from delivery.sender import Outgoing, Resolver, SendPolicy, SystemResolver, client_for, send
from delivery.signing import decode_secret
from models.webhooks import Claimed, any_due, claim_due, record_attempt
from observability import metrics
from penny.errors import PennyError
from penny.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SigningKeys:
    """The keys each tenant's deliveries are signed with: its own secrets if configured,
    else the shared ones."""

    shared: tuple[bytes, ...]
    by_tenant: dict[str, tuple[bytes, ...]]

    @classmethod
    def from_settings(cls, settings: Settings) -> SigningKeys:
        def decode(secrets: Sequence[str], name: str) -> tuple[bytes, ...]:
            keys = []
            for index, secret in enumerate(secrets):
                try:
                    keys.append(decode_secret(secret))
                except ValueError as error:
                    raise PennyError(f"{name}[{index}] is not a valid webhook secret: "
                                     f"{error}") from None
            return tuple(keys)

        return cls(
            shared=decode(settings.webhook_secrets, "PENNY_WEBHOOK_SECRETS"),
            by_tenant={tenant: decode(secrets, f"PENNY_WEBHOOK_TENANT_SECRETS[{tenant!r}]")
                       for tenant, secrets in settings.webhook_tenant_secrets.items()},
        )

    def for_tenant(self, tenant: str) -> tuple[bytes, ...]:
        return self.by_tenant.get(tenant) or self.shared


@dataclass(frozen=True)
class RoundReport:
    attempted: int
    delivered: int


class WebhookDeliverer:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        resolver: Resolver | None = None,
        spread: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.keys = SigningKeys.from_settings(settings)  # a bad secret fails the role's start
        self.resolver = resolver or SystemResolver()
        self.spread = spread or random.random  # where each retry falls in its jitter band
        self.policy = RetryPolicy(
            max_attempts=settings.webhook_max_attempts,
            base_seconds=settings.webhook_retry_base_seconds,
            max_delay_seconds=settings.webhook_retry_max_seconds,
        )
        self.send_policy = SendPolicy(
            allow_loopback=settings.webhook_allow_loopback,
            connect_timeout=settings.webhook_connect_timeout_seconds,
            timeout=settings.webhook_timeout_seconds,
        )
        # An attempt in flight holds its delivery this long; a crash leaves it due after.
        self.lease = timedelta(seconds=settings.webhook_timeout_seconds * 2 + 30)
        self._warned_unsigned = False

    def deliver_due(self, now: datetime | None = None) -> RoundReport:
        """One round: every delivery due at `now` (default: the clock) gets one attempt.
        `now` also stamps the signatures, and retries are scheduled from it."""
        now = now or datetime.now(UTC)
        if not self.keys.shared and not self.keys.by_tenant:
            if not self._warned_unsigned:
                with self.sessions() as session:
                    waiting = any_due(session, now)
                if waiting:
                    log.warning("webhook deliveries wait: PENNY_WEBHOOK_SECRETS is not set")
                    self._warned_unsigned = True
            return RoundReport(0, 0)
        with self.sessions() as session:
            claimed = claim_due(session, now, self.settings.webhook_batch_size, self.lease)
            session.commit()
        if not claimed:
            return RoundReport(0, 0)
        results = asyncio.run(self._send_all(claimed, int(now.timestamp())))
        delivered = 0
        outcomes: list[str] = []
        with self.sessions() as session:
            for item, result in zip(claimed, results, strict=True):
                retry_after = parse_retry_after(result.retry_after, now)
                decision = decide(self.policy, attempt=item.attempt,
                                  status_code=result.status_code, retry_after=retry_after,
                                  now=now, spread=self.spread())
                record_attempt(session, item, now, result, decision, retry_after)
                delivered += decision.status == "delivered"
                outcomes.append(decision.status.value)
                log.info("webhook %s to %s: attempt %d, %s%s", item.event_id, item.url,
                         item.attempt, decision.status,
                         f" ({result.error})" if result.error else "")
            session.commit()
        metrics.record_webhook_attempts(outcomes)
        return RoundReport(len(claimed), delivered)

    async def _send_all(self, claimed: Sequence[Claimed], timestamp: int
                        ) -> list[AttemptResult]:
        ca_file = str(self.settings.webhook_ca_file) if self.settings.webhook_ca_file else None
        async with client_for(self.send_policy, ca_file) as client:
            return list(await asyncio.gather(*(
                self._send_one(client, item, timestamp) for item in claimed)))

    async def _send_one(self, client: httpx.AsyncClient, item: Claimed, timestamp: int
                        ) -> AttemptResult:
        keys = self.keys.for_tenant(item.tenant)
        if not keys:
            return AttemptResult(status_code=None, duration_ms=0.0,
                                 error=f"no signing secret for tenant {item.tenant!r}")
        outgoing = Outgoing(item.url, item.event_id, item.payload.encode(), keys)
        return await send(client, self.resolver, self.send_policy, outgoing, timestamp)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                report = self.deliver_due()
            except Exception:  # a database blip must not end the loop; the outbox keeps all
                log.exception("webhook delivery round failed")
                report = RoundReport(0, 0)
            if not report.attempted:
                stop.wait(self.settings.webhook_poll_interval_seconds)
