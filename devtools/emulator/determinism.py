"""Seeded, order-independent randomness: every choice is a hash of (seed, purpose, keys).

Hashing instead of drawing from one generator keeps a choice stable no matter in which order
batches or lines are handled, so a run under ``--seed`` is reproducible.
"""

from __future__ import annotations

import hashlib


def digest(*parts: object) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(str(part).encode())
        h.update(b"\x1f")
    return h.digest()


def unit(*parts: object) -> float:
    """A uniform number in [0, 1) determined by ``parts``."""
    return int.from_bytes(digest(*parts)[:8], "big") / 2**64


def hex_id(*parts: object, length: int = 24) -> str:
    return digest(*parts).hex()[:length]


def pick(options: list[int], *parts: object) -> int:
    return options[int(unit(*parts) * len(options)) % len(options)]
