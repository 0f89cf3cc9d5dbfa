"""API keys: how they are made, hashed and recognised. Pure.

A key is `pk_` plus 40 random URL-safe characters (240 bits). Only its SHA-256 is stored:
with that much entropy a fast hash is enough (nobody can guess their way back to a key),
and it lets the auth path find a key with one indexed equality lookup instead of comparing
secrets. `prefix` (the first 11 characters) is kept in the clear so people can tell their
keys apart in listings; it is far too short to use.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

KEY_PREFIX = "pk_"
_SHOWN_CHARS = 11
_HASHED = "sha256:"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(30)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def shown_prefix(key: str) -> str:
    return key[:_SHOWN_CHARS]


class AdminKeys:
    """The admin keys of a deployment, held as hashes. A configured entry is a key, or the
    key's hash written `sha256:<hex>` so the plain key need not sit in the environment.

    `matches` compares the presented key's hash with every admin hash, without stopping at
    the first match, so how long it takes says nothing about which entry (if any) matched.
    """

    def __init__(self, configured: Iterable[str]) -> None:
        self._hashes = [entry.removeprefix(_HASHED).lower() if entry.startswith(_HASHED)
                        else hash_key(entry) for entry in configured]

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def matches(self, key: str) -> bool:
        presented = hash_key(key).encode()
        found = False
        for known in self._hashes:
            found |= hmac.compare_digest(presented, known.encode())
        return found
