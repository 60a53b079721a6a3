"""Authentication step of ingest: ``Authorization: Bearer <key>`` against the configured keys.

With no keys configured (``BATCHPIPE_INGEST_API_KEYS`` unset) every request passes. Otherwise
the token is compared with every key in constant time: both sides are hashed (SHA-256, so the
comparison does not depend on their lengths) and compared with ``hmac.compare_digest`` against
all keys without stopping at a match. Neither keys nor tokens are ever logged or returned.

Each key has a name, the only thing about it that leaves this module: ingest stamps it on the
requests it publishes (header ``batchpipe-key``) so that usage and cost can be attributed to
it. A key is configured as ``name=key`` (the name matches ``KEY_NAME_PATTERN``) or bare; a bare
key is named by its fingerprint, ``key-`` and the first 8 hex digits of its SHA-256 (32 bits of
a hash cannot give a random key away, and the same key keeps the same name across restarts).
A bare key that itself contains ``=`` after a valid name must therefore be given a name.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from enum import Enum

from pydantic import SecretStr

from batchpipe.shared.contracts import is_valid_key_name


class AuthResult(Enum):
    OK = "ok"
    MISSING = "missing"
    INVALID = "invalid"


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def fingerprint(key: str) -> str:
    """The non-secret name of a bare key: ``key-`` + 8 hex digits of its SHA-256."""
    return "key-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


def split_key(entry: str) -> tuple[str, str]:
    """``(name, key)`` of one configured entry: ``name=key``, or a bare key (its fingerprint
    for a name). A rest that is empty or starts with ``=`` (base64 padding) means bare."""
    name, sep, key = entry.partition("=")
    if sep and key and not key.startswith("=") and is_valid_key_name(name):
        return name, key
    return fingerprint(entry), entry


class ApiKeys:
    """The accepted keys, kept only as digests, each with its name."""

    def __init__(self, keys: Sequence[SecretStr]) -> None:
        pairs = [split_key(k.get_secret_value()) for k in keys]
        self._digests = tuple(_digest(key.encode("utf-8")) for _, key in pairs)
        self._names = tuple(name for name, _ in pairs)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def check(self, authorization: str | None) -> AuthResult:
        """Check an ``Authorization`` header value."""
        return self.identify(authorization)[0]

    def identify(self, authorization: str | None) -> tuple[AuthResult, str | None]:
        """Check an ``Authorization`` header value; with ``OK``, the matching key's name (None
        when no keys are configured)."""
        if not self._digests:
            return AuthResult.OK, None
        if not authorization:
            return AuthResult.MISSING, None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return AuthResult.MISSING, None
        given = _digest(token.strip().encode("utf-8", errors="surrogateescape"))
        matched: str | None = None
        for digest, name in zip(self._digests, self._names, strict=True):  # no early exit
            if hmac.compare_digest(digest, given) and matched is None:
                matched = name
        return (AuthResult.OK, matched) if matched is not None else (AuthResult.INVALID, None)
