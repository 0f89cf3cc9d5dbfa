"""Which URLs penny may call: the SSRF policy, pure.

A callback URL is checked when it is registered and again before every delivery, against
every address its host resolves to; the delivery then connects to an address that was
checked (`delivery.sender`), so DNS cannot swap in another address between check and
connect. Only public unicast addresses pass. Loopback passes only when the caller allows it
(`PENNY_WEBHOOK_ALLOW_LOOPBACK`, for tests).

Hosts are read the way the C library's `inet_aton` and browsers read them, so every
spelling of an address is caught as that address: `2130706433`, `0177.0.0.1`, `0x7f.1` and
`127.1` are all 127.0.0.1. A host whose last label is a number must be such an address.
IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-translated, IPv4-compatible,
NAT64 and 6to4) are judged by the address they carry.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from penny.errors import UnsafeUrl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_LENGTH = 2000  # the column that stores a callback URL
MAX_PORT = 65535
SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}

# Specific entries first: the first network that holds an address names the reason.
_V4_BLOCKED = [(ipaddress.IPv4Network(net), reason) for net, reason in (
    ("169.254.169.254/32", "the cloud metadata service"),
    ("168.63.129.16/32", "the cloud metadata service"),  # Azure's host endpoint
    ("100.100.100.200/32", "the cloud metadata service"),  # Alibaba Cloud's
    ("0.0.0.0/8", "an unspecified ('this network') address"),
    ("127.0.0.0/8", "a loopback address"),
    ("10.0.0.0/8", "a private address"),
    ("172.16.0.0/12", "a private address"),
    ("192.168.0.0/16", "a private address"),
    ("100.64.0.0/10", "a carrier-grade NAT (shared) address"),
    ("169.254.0.0/16", "a link-local address"),
    ("192.0.0.0/24", "an IETF protocol address"),
    ("192.0.2.0/24", "a documentation address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("192.88.99.0/24", "a 6to4 relay address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved or broadcast address"),
)]
_V6_BLOCKED = [(ipaddress.IPv6Network(net), reason) for net, reason in (
    ("fd00:ec2::254/128", "the cloud metadata service"),
    ("::1/128", "a loopback address"),
    ("::/128", "an unspecified address"),
    ("64:ff9b:1::/48", "a local-use NAT64 address"),
    ("100::/64", "a discard-only address"),
    ("2001::/32", "a Teredo address"),
    ("2001:db8::/32", "a documentation address"),
    ("2001:10::/28", "an ORCHID address"),
    ("2001:20::/28", "an ORCHID address"),
    ("fc00::/7", "a unique local (private) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
    ("::/8", "a reserved address"),
)]
_LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NUMBER = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


@dataclass(frozen=True)
class Refusal:
    """Why an address may not be called. `loopback`: refused only because it is this
    machine, which a test setting may allow."""

    reason: str
    loopback: bool = False


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address, bool] | None:
    """The IPv4 address an IPv6 address carries, how it carries it, and whether that form
    can reach a public IPv4 host at all (the translated and compatible forms cannot)."""
    if ip.ipv4_mapped is not None:
        return "an IPv4-mapped form of", ip.ipv4_mapped, True
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64:
        return "a NAT64 form of", low32, True
    if ip.sixtofour is not None:
        return "a 6to4 form of", ip.sixtofour, True
    if ip in _IPV4_TRANSLATED:
        return "an IPv4-translated form of", low32, False
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are themselves
        return "a deprecated IPv4-compatible form of", low32, False
    return None


def refusal_for(ip: IPAddress) -> Refusal | None:
    """None when penny may call `ip`; otherwise why not."""
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ipaddress.IPv6Address(int(ip))  # drop a zone id: the address is what counts
        embedded = _embedded_v4(ip)
        if embedded is not None:
            how, inner, routable = embedded
            inner_refusal = refusal_for(inner)
            if inner_refusal is None and routable:
                return None
            reason = inner_refusal.reason if inner_refusal else "never routed"
            # Only the mapped form reaches this machine's IPv4 loopback (a dual-stack
            # socket); the others need a translator and are never a test's receiver.
            loopback = (inner_refusal is not None and inner_refusal.loopback
                        and how.startswith("an IPv4-mapped"))
            return Refusal(f"{how} {inner} ({reason})", loopback=loopback)
        for network, reason in _V6_BLOCKED:
            if ip in network:
                return Refusal(reason, loopback=ip == _LOOPBACK_V6)
    else:
        for network4, reason in _V4_BLOCKED:
            if ip in network4:
                return Refusal(reason, loopback=ip in _LOOPBACK_V4)
    if not ip.is_global:  # whatever else the address registry calls non-global
        return Refusal("not a globally routable address")
    return None


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """`host` read as `inet_aton` reads it: one to four parts, each decimal, octal
    (leading 0) or hex (0x); the last part fills the remaining bytes. None if invalid."""
    parts = host.split(".")
    if len(parts) > 4:
        return None
    values = []
    for part in parts:
        if not _NUMBER.match(part):
            return None
        if part.startswith("0x"):
            values.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part.startswith("0"):
            if not set(part) <= set("01234567"):
                return None
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *front, last = values
    if any(v > 255 for v in front) or last >= 256 ** (4 - len(front)):
        return None
    number = last
    for index, value in enumerate(front):
        number += value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def parse_host(host: str, *, param: str = "callback_url") -> IPAddress | str:
    """The address a URL's host spells, or the host name (lower case, no trailing dot)."""
    name = host.lower().removesuffix(".")
    if not name:
        raise UnsafeUrl(f"{param} has no host", param=param)
    if ":" in name:  # IPv6 (httpx gives it without brackets); a zone id names no address
        try:
            return ipaddress.IPv6Address(name.split("%", 1)[0])
        except ValueError:
            raise UnsafeUrl(f"{param} host {host!r} is not a valid IPv6 address",
                            param=param) from None
    if _NUMBER.match(name.rsplit(".", 1)[-1]):
        address = _inet_aton(name)
        if address is None:
            raise UnsafeUrl(f"{param} host {host!r} ends in a number but is not a valid "
                            "IPv4 address", param=param)
        return address
    return name


@dataclass(frozen=True)
class Target:
    """A URL penny may call, as checked. `address` is the literal address the host spells;
    None when the host is a name, which must be resolved (and each address checked)."""

    url: str
    scheme: str
    host: str  # as the URL has it: the Host header and the TLS server name
    port: int
    address: IPAddress | None


def check_address(ip: IPAddress, *, allow_loopback: bool, what: str,
                  param: str = "callback_url") -> None:
    refusal = refusal_for(ip)
    if refusal is not None and not (allow_loopback and refusal.loopback):
        raise UnsafeUrl(f"{param} {what} {ip}, {refusal.reason}; penny calls only public "
                        "addresses", param=param)


def _refuse_spelled_address(url: str, *, allow_loopback: bool, param: str) -> None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return
    if host:
        address = parse_host(host, param=param)
        if not isinstance(address, str):
            check_address(address, allow_loopback=allow_loopback, what="is", param=param)


def check_url(url: str, *, allow_loopback: bool, param: str = "callback_url") -> Target:
    """Everything that can be checked without DNS: scheme, credentials, and a host that is
    an address or a name for this machine. Raises UnsafeUrl naming `param`."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"{param} is longer than {MAX_URL_LENGTH} characters", param=param)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as invalid:
        # httpx refuses some spellings of an address (0177.0.0.1); say which address.
        _refuse_spelled_address(url, allow_loopback=allow_loopback, param=param)
        raise UnsafeUrl(f"{param} is not a valid URL: {invalid}", param=param) from None
    if parsed.scheme not in SCHEMES:
        raise UnsafeUrl(f"{param} must be an http or https URL, not {parsed.scheme or 'none'!r}",
                        param=param)
    if parsed.userinfo:
        raise UnsafeUrl(f"{param} must not carry credentials (user:password@)", param=param)
    if parsed.port is not None and not 1 <= parsed.port <= MAX_PORT:
        # httpx parses any number; a delivery to it could only ever fail.
        raise UnsafeUrl(f"{param} port {parsed.port} is not a TCP port (1 to {MAX_PORT})",
                        param=param)
    host = parse_host(parsed.host, param=param)
    if isinstance(host, str):
        if (host == "localhost" or host.endswith(".localhost")) and not allow_loopback:
            raise UnsafeUrl(f"{param} host {host!r} names this machine (loopback); penny "
                            "calls only public addresses", param=param)
        address = None
    else:
        check_address(host, allow_loopback=allow_loopback, what="is", param=param)
        address = host
    return Target(url=str(parsed), scheme=parsed.scheme, host=parsed.host,
                  port=parsed.port or DEFAULT_PORTS[parsed.scheme], address=address)
