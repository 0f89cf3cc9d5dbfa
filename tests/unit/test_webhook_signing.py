"""Standard Webhooks signatures, checked against the spec's published example and the
reference implementation (the `standardwebhooks` package)."""

from __future__ import annotations

import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from delivery.signing import decode_secret, new_secret, signature, signed_headers

# The example in the Standard Webhooks specification's reference libraries.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_spec_example() -> None:
    key = decode_secret(SPEC_SECRET)
    assert signature(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_reference_implementation_verifies_headers() -> None:
    secret = new_secret()
    body = b'{"id":"evt_1","type":"batch.completed"}'
    headers = signed_headers([decode_secret(secret)], "evt_1", int(time.time()), body)
    assert Webhook(secret).verify(body, headers) == {"id": "evt_1", "type": "batch.completed"}
    tampered = body.replace(b"completed", b"cancelled")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, headers)


def test_rotation_signs_with_every_secret_and_either_verifies() -> None:
    old, new, stranger = new_secret(), new_secret(), new_secret()
    body = b'{"id":"evt_2"}'
    headers = signed_headers([decode_secret(new), decode_secret(old)], "evt_2",
                             int(time.time()), body)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    for secret in (old, new):
        Webhook(secret).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, headers)


@pytest.mark.parametrize(("secret", "problem"), [
    ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with 'whsec_'"),
    ("whsec_not base64!", "standard base64"),
    ("whsec_c2hvcnQ=", "at least 16 bytes"),
])
def test_bad_secrets_are_refused_saying_why(secret: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode_secret(secret)


def test_signing_without_a_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        signed_headers([], "evt_3", 0, b"{}")
