"""Deterministic choices from text: the same key always lands at the same point of
[0, 1), on any machine and in any run, so samples and splits are reproducible."""

from __future__ import annotations

import hashlib


def unit_hash(key: str) -> float:
    """A number in [0, 1) from the first 32 bits of the key's SHA-1."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0x100000000
