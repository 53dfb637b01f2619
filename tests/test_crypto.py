"""Secrets at rest (AES-256-GCM, HKDF-derived keys) and Meta's webhook signatures."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from memoryd.bridges.whatsapp import Throttle
from memoryd.crypto import (
    DecryptionFailed,
    SecretBox,
    derive_key,
    hub_signature,
    verify_hub_signature,
)

SECRET = "s" * 48


def test_a_box_round_trips_with_a_fresh_nonce_each_time() -> None:
    box = SecretBox(SECRET, "whatsapp-access-token")
    first = box.encrypt("EAAG-token", b"user-1")
    second = box.encrypt("EAAG-token", b"user-1")
    assert first != second and first.startswith("v1.")
    assert "EAAG" not in first
    assert box.decrypt(first, b"user-1") == box.decrypt(second, b"user-1") == "EAAG-token"


@pytest.mark.parametrize(
    ("key", "purpose", "aad"),
    [
        ("t" * 48, "whatsapp-access-token", b"user-1"),  # another MEMORYD_SECRET_KEY
        (SECRET, "another-purpose", b"user-1"),  # another derived key
        (SECRET, "whatsapp-access-token", b"user-2"),  # copied into another user's row
    ],
)
def test_a_ciphertext_only_opens_with_its_key_purpose_and_owner(
    key: str, purpose: str, aad: bytes
) -> None:
    sealed = SecretBox(SECRET, "whatsapp-access-token").encrypt("EAAG-token", b"user-1")
    with pytest.raises(DecryptionFailed):
        SecretBox(key, purpose).decrypt(sealed, aad)


def test_tampered_or_malformed_ciphertexts_are_refused() -> None:
    box = SecretBox(SECRET, "p")
    sealed = box.encrypt("value", b"")
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    for bad in (flipped, "v2." + sealed[3:], "v1.", "v1.!!!", "plain"):
        with pytest.raises(DecryptionFailed):
            box.decrypt(bad, b"")


def test_keys_are_256_bits_and_differ_per_purpose() -> None:
    assert len(derive_key(SECRET, "a")) == 32
    assert derive_key(SECRET, "a") != derive_key(SECRET, "b")


def test_hub_signature_is_hmac_sha256_of_the_raw_bytes() -> None:
    body = b'{"object":"whatsapp_business_account","url":"https:\\/\\/x"}'
    expected = "sha256=" + hmac.new(b"app-secret", body, hashlib.sha256).hexdigest()
    assert hub_signature("app-secret", body) == expected
    assert verify_hub_signature("app-secret", body, expected)
    assert verify_hub_signature("app-secret", body, expected.upper().replace("SHA256", "sha256"))
    for header in (None, "", expected[7:], "sha256=" + "0" * 64, expected + "0", "sha256=é"):
        assert not verify_hub_signature("app-secret", body, header)
    assert not verify_hub_signature("app-secret", body.replace(b"\\/", b"/"), expected)


def test_throttle_allows_a_burst_then_spaces_sends() -> None:
    throttle = Throttle(rate=10.0)
    waits = [throttle.reserve("number") for _ in range(12)]
    assert waits[:10] == [0.0] * 10
    assert waits[10] == pytest.approx(0.1, abs=0.01)
    assert waits[11] == pytest.approx(0.2, abs=0.01)
    throttle.release("number")
    assert throttle.reserve("number") == pytest.approx(0.2, abs=0.01)
    assert throttle.reserve("other") == 0.0  # buckets are per number
