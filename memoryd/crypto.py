"""Secrets at rest and webhook signatures.

- `SecretBox`: AES-256-GCM with a random 96-bit nonce per message. The key is derived from
  ``MEMORYD_SECRET_KEY`` with HKDF-SHA256 and a per-purpose ``info``, so one secret can key
  several independent boxes. The caller passes associated data (e.g. the owner's user id):
  a ciphertext copied into another user's row does not decrypt.
- `verify_hub_signature`: Meta's ``X-Hub-Signature-256`` header, an HMAC-SHA256 of the raw
  request body, compared in constant time. The body is never re-serialised: Meta signs the
  exact bytes it sends (with its own escaping of ``/`` and non-ASCII characters).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_SALT = b"memoryd.secret-box.v1"
_VERSION = "v1"
_NONCE_BYTES = 12


class DecryptionFailed(Exception):
    """The ciphertext is malformed, was made with another key, or belongs elsewhere."""


def derive_key(secret: str, purpose: str) -> bytes:
    """A 256-bit key for ``purpose`` derived from ``secret`` with HKDF-SHA256."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=purpose.encode())
    return hkdf.derive(secret.encode())


class SecretBox:
    """Encrypts short secrets (access tokens) for storage as ``v1.<base64url>`` text."""

    def __init__(self, secret: str, purpose: str) -> None:
        self._aead = AESGCM(derive_key(secret, purpose))

    def encrypt(self, plaintext: str, associated_data: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), associated_data)
        return f"{_VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, associated_data: bytes) -> str:
        version, _, body = token.partition(".")
        if version != _VERSION or not body:
            raise DecryptionFailed("unknown ciphertext format")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            plaintext = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], associated_data)
        except (ValueError, InvalidTag):
            raise DecryptionFailed("ciphertext does not decrypt with this key") from None
        return plaintext.decode()


def hub_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for ``body``: ``sha256=<hex>``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_hub_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True when ``header`` is the HMAC-SHA256 of the raw ``body`` (constant-time compare)."""
    if not header:
        return False
    expected = hub_signature(secret, body)
    # Hex case is not significant; compare_digest needs ASCII on both sides.
    given = header.strip().lower()
    if not given.isascii():
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
