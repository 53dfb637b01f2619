"""argon2id password hashing, off the event loop (each hash costs tens of milliseconds)."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# argon2id at OWASP's recommended floor (19 MiB, 2 passes, 1 lane). argon2-cffi's default
# (RFC 9106 "low memory": 64 MiB, 3 passes, 4 lanes) costs about 5x the CPU per login and
# runs 4 threads per hash: under the seed's login-every-iteration load profile that alone
# pushed every other request's p95 past 200 ms on a node with one core. Hashes made with
# other parameters still verify, and are rehashed at the next login (`needs_rehash`).
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified when the email is unknown, so both failures take the same time.
_DUMMY_HASH = _hasher.hash("memoryd-timing-equaliser")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
