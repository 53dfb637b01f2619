"""Key material kept in the data dir: the RS256 signing key pair and the secret key.

Generated on first start with mode 0600 and reused afterwards, so tokens survive a
restart. Nodes of one deployment must share them: point ``MEMORYD_JWT_PRIVATE_KEY_FILE``
and ``MEMORYD_SECRET_KEY`` at the same values on every node.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from memoryd.config import Settings
from memoryd.errors import ConfigError

log = logging.getLogger("memoryd.keys")


@dataclass(frozen=True)
class KeyMaterial:
    jwt_private_pem: bytes
    jwt_public_pem: bytes
    secret_key: str


def _write_private(path: Path, data: bytes) -> bool:
    """Create ``path`` (mode 0600) atomically; False when another process made it first.

    Nodes sharing a data dir may start together: the file appears whole or not at all.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def _generate_rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_or_create_keys(settings: Settings) -> KeyMaterial:
    keys_dir = settings.data_dir / "keys"
    private_path = settings.jwt_private_key_file or keys_dir / "jwt_rs256.pem"
    if not private_path.exists():
        if settings.jwt_private_key_file is not None:
            raise ConfigError(f"MEMORYD_JWT_PRIVATE_KEY_FILE: no such file: {private_path}")
        if _write_private(private_path, _generate_rsa_pem()):
            log.info("generated a new RS256 signing key in %s", private_path)
    try:
        private_pem = private_path.read_bytes()
        private_key = serialization.load_pem_private_key(private_pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot load the JWT signing key {private_path}: {exc}") from None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ConfigError(f"the JWT signing key {private_path} is not an RSA key")
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    secret = settings.secret_key
    if secret is None:
        secret_path = keys_dir / "secret_key"
        if not secret_path.exists() and _write_private(
            secret_path, secrets.token_urlsafe(48).encode()
        ):
            log.info("generated a new secret key in %s", secret_path)
        secret = secret_path.read_text().strip()
    return KeyMaterial(private_pem, public_pem, secret)
