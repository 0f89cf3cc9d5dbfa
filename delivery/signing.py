"""Standard Webhooks signatures, pure: the scheme the `standardwebhooks` package and the
`openai` SDK's `client.webhooks.unwrap` verify.

Every delivery carries `webhook-id` (the event id, the same on every retry, for the
receiver to drop duplicates), `webhook-timestamp` (Unix seconds when this attempt was
signed; receivers refuse ones more than five minutes off) and `webhook-signature`:
`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`. Secrets are `whsec_` + base64 of the key.
To rotate, configure the new secret next to the old one: each delivery is then signed with
both, space-separated, so a receiver holding either verifies it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES = 16


def decode_secret(secret: str) -> bytes:
    """The key inside a `whsec_` secret; ValueError names what is wrong."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is 'whsec_' + standard base64 (with padding)") \
            from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a webhook secret's key has at least {MIN_KEY_BYTES} bytes")
    return key


def new_secret() -> str:
    """A fresh secret: 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    keys: Sequence[bytes], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers; one signature per key, space-separated."""
    if not keys:
        raise ValueError("at least one signing key is needed")
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(k, webhook_id, timestamp, body) for k in keys),
    }
