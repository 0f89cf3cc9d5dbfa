"""The SSRF check at registration: a callback URL is refused (UnsafeUrl, a 422 naming the
field) when it is not http(s), carries credentials, or its host is or resolves to an
address penny may not call. A name that does not resolve now is accepted: it is checked
again, with whatever it resolves to then, before every delivery."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from delivery.addresses import IPAddress, check_address, check_url

SyncResolver = Callable[[str, int], list[IPAddress]]


def system_addresses(host: str, port: int) -> list[IPAddress]:
    """What the host resolves to now; empty if it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def checked_callback_url(
    url: str,
    *,
    allow_loopback: bool,
    param: str = "callback_url",
    resolve: SyncResolver = system_addresses,
) -> str:
    """`url` if penny may call it; raises UnsafeUrl naming `param` otherwise."""
    target = check_url(url, allow_loopback=allow_loopback, param=param)
    if target.address is None:
        for address in resolve(target.host, target.port):
            check_address(address, allow_loopback=allow_loopback,
                          what=f"host {target.host!r} resolves to", param=param)
    return url
