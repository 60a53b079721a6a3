"""Authentication step of ingest: ``Authorization: Bearer <key>`` against the configured keys.

With no keys configured (``BATCHPIPE_INGEST_API_KEYS`` unset) every request passes. Otherwise
the token is compared with every key in constant time: both sides are hashed (SHA-256, so the
comparison does not depend on their lengths) and compared with ``hmac.compare_digest`` against
all keys without stopping at a match. Neither keys nor tokens are ever logged or returned.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from enum import Enum

from pydantic import SecretStr


class AuthResult(Enum):
    OK = "ok"
    MISSING = "missing"
    INVALID = "invalid"


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class ApiKeys:
    """The accepted keys, kept only as digests."""

    def __init__(self, keys: Sequence[SecretStr]) -> None:
        self._digests = tuple(_digest(k.get_secret_value().encode("utf-8")) for k in keys)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, authorization: str | None) -> AuthResult:
        """Check an ``Authorization`` header value."""
        if not self._digests:
            return AuthResult.OK
        if not authorization:
            return AuthResult.MISSING
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return AuthResult.MISSING
        given = _digest(token.strip().encode("utf-8", errors="surrogateescape"))
        matched = False
        for digest in self._digests:  # every key, no early exit
            matched |= hmac.compare_digest(digest, given)
        return AuthResult.OK if matched else AuthResult.INVALID
