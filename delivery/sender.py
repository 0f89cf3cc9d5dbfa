"""One delivery attempt over HTTP: check the URL, resolve its host once, check every
address, then connect to a checked address, never to the name.

The request goes to the URL with its host replaced by the checked IP; the `Host` header
keeps the original host, and for https the TLS server name (SNI) is the original host
too (httpx's `sni_hostname` extension), so the certificate is still verified against the
host name the tenant registered. A DNS answer that changes between check and connect
(rebinding) therefore changes nothing. Redirects are not followed, proxies from the
environment are not used (a proxy would resolve the name again), and the whole attempt
has one deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from delivery.addresses import IPAddress, Target, check_address, check_url
from delivery.schedule import AttemptResult
from delivery.signing import signed_headers
from penny.errors import UnsafeUrl

USER_AGENT = "penny-webhooks/1"
EXCERPT_BYTES = 1024  # of the receiver's answer, kept in the delivery log


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[IPAddress]: ...


class SystemResolver:
    """The operating system's resolver (getaddrinfo), run off the event loop."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)
        addresses: list[IPAddress] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
        return addresses


@dataclass(frozen=True)
class Outgoing:
    url: str
    webhook_id: str
    body: bytes
    keys: Sequence[bytes]


@dataclass(frozen=True)
class SendPolicy:
    allow_loopback: bool
    connect_timeout: float
    timeout: float


def client_for(policy: SendPolicy, ca_file: str | None = None) -> httpx.AsyncClient:
    verify: ssl.SSLContext | bool = (ssl.create_default_context(cafile=ca_file) if ca_file
                                     else True)
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        verify=verify,
        timeout=httpx.Timeout(policy.timeout, connect=policy.connect_timeout),
    )


def _host_header(target: Target) -> str:
    netloc = httpx.URL(target.url).netloc.decode("ascii")
    return netloc.rsplit("@", 1)[-1]


async def _exchange(client: httpx.AsyncClient, request: httpx.Request
                    ) -> tuple[httpx.Response, bytes]:
    response = await client.send(request, stream=True)
    excerpt = b""
    try:
        async for chunk in response.aiter_raw():
            excerpt += chunk
            if len(excerpt) >= EXCERPT_BYTES:
                break
    finally:
        await response.aclose()
    return response, excerpt[:EXCERPT_BYTES]


class _Unresolved(Exception):
    """The host has no address to check and connect to (now)."""


async def _checked_addresses(resolver: Resolver, policy: SendPolicy, target: Target
                             ) -> list[IPAddress]:
    """The addresses to connect to, every one checked (UnsafeUrl if any is refused: a
    name that also points inside is refused whole)."""
    if target.address is not None:
        return [target.address]
    try:
        addresses = await asyncio.wait_for(resolver.resolve(target.host, target.port),
                                           policy.connect_timeout)
    except (OSError, TimeoutError) as error:
        raise _Unresolved(f"could not resolve {target.host!r}: {error or 'timed out'}") \
            from None
    if not addresses:
        raise _Unresolved(f"{target.host!r} has no address")
    for address in addresses:
        check_address(address, allow_loopback=policy.allow_loopback,
                      what=f"host {target.host!r} resolves to")
    return addresses


async def send(
    client: httpx.AsyncClient,
    resolver: Resolver,
    policy: SendPolicy,
    outgoing: Outgoing,
    timestamp: int,
) -> AttemptResult:
    started = time.perf_counter()
    try:
        target = check_url(outgoing.url, allow_loopback=policy.allow_loopback)
        addresses = await _checked_addresses(resolver, policy, target)
    except UnsafeUrl as refused:
        return AttemptResult(None, f"refused: {refused.message}", _ms_since(started))
    except _Unresolved as unresolved:
        return AttemptResult(None, str(unresolved), _ms_since(started))
    headers = {
        **signed_headers(outgoing.keys, outgoing.webhook_id, timestamp, outgoing.body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "host": _host_header(target),
    }
    extensions = {"sni_hostname": target.host} if (
        target.scheme == "https" and target.address is None) else {}
    failures = []
    for address in addresses:
        request = client.build_request(
            "POST", httpx.URL(target.url).copy_with(host=str(address)), headers=headers,
            content=outgoing.body, extensions=extensions)
        where = f"{address}:{target.port}"
        remaining = policy.timeout - (time.perf_counter() - started)
        try:
            response, excerpt = await asyncio.wait_for(_exchange(client, request),
                                                       max(remaining, 0.001))
        except httpx.ConnectError as failed:  # the next checked address may answer
            failures.append(f"could not connect to {where}: {failed}")
            continue
        except (TimeoutError, httpx.TimeoutException):
            return AttemptResult(None, f"no answer within {policy.timeout:g} s",
                                 _ms_since(started), timestamp, where)
        except httpx.HTTPError as failed:
            return AttemptResult(None, f"{type(failed).__name__}: {failed}",
                                 _ms_since(started), timestamp, where)
        return AttemptResult(response.status_code, _answer_error(response),
                             _ms_since(started), timestamp, where,
                             retry_after=response.headers.get("retry-after"),
                             response_excerpt=excerpt.decode("utf-8", "replace"))
    return AttemptResult(None, "; ".join(failures), _ms_since(started), timestamp)


def _answer_error(response: httpx.Response) -> str | None:
    if response.is_redirect:
        return (f"answered {response.status_code} redirecting to "
                f"{response.headers.get('location')!r}; redirects are not followed")
    if not response.is_success:
        return f"answered {response.status_code}"
    return None


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
