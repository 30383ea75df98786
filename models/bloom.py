"""A Bloom filter of 64-bit hashes, split into parts that are each one file.

Sized as usual for `capacity` items at a false-positive rate p: m = -n ln p / (ln 2)^2
bits and k = round(m / n * ln 2) probes. A hash belongs to one part (a mix of its bits,
modulo the number of parts), so a task that holds one part tests or adds every hash of
that part and never needs the others; the parts are at most PART_BITS bits (16 MiB)
each. The k probes of a hash are h1 + i * h2 modulo the part's bits (Kirsch and
Mitzenmacher's double hashing), h1 and h2 two further mixes of the hash.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

PART_BITS = 1 << 27
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SALT_PART, _SALT_H1, _SALT_H2 = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0x632BE59BD9B4E019),
                                  np.uint64(0x85EBCA77C2B2AE63))


def _mix(values: np.ndarray, salt: np.uint64) -> np.ndarray:
    """splitmix64's finalizer of values ^ salt: every output bit depends on every input
    bit, so that the part and the probes are independent of each other."""
    with np.errstate(over="ignore"):
        z = values ^ salt
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def share(hashes: np.ndarray, n: int) -> np.ndarray:
    """Which of n shares a hash falls in (the part mix modulo n): with n a multiple of
    a filter's parts, share % parts is the hash's part."""
    return (_mix(np.asarray(hashes, np.uint64), _SALT_PART) % np.uint64(n)).astype(np.int64)


@dataclass(frozen=True)
class BloomShape:
    capacity: int
    fp_rate: float
    parts: int
    part_bits: int
    probes: int

    @classmethod
    def sized(cls, capacity: int, fp_rate: float) -> "BloomShape":
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive number of items, got {capacity!r}")
        if not 0 < fp_rate < 1:
            raise ValueError(f"fp_rate must be between 0 and 1, got {fp_rate!r}")
        bits = math.ceil(-capacity * math.log(fp_rate) / math.log(2) ** 2)
        parts = max(1, math.ceil(bits / PART_BITS))
        part_bits = math.ceil(bits / parts / 64) * 64
        probes = max(1, round(part_bits * parts / capacity * math.log(2)))
        return cls(capacity, fp_rate, parts, part_bits, probes)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def part_bytes(self) -> int:
        return self.part_bits // 8

    def part_of(self, hashes: np.ndarray) -> np.ndarray:
        return share(hashes, self.parts)

    def empty_part(self) -> np.ndarray:
        return np.zeros(self.part_bytes, np.uint8)

    def _probes(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(byte index, bit) of each probe: (n, k) arrays."""
        hashes = np.asarray(hashes, np.uint64)
        h1 = _mix(hashes, _SALT_H1)[:, None]
        h2 = (_mix(hashes, _SALT_H2) | np.uint64(1))[:, None]
        i = np.arange(self.probes, dtype=np.uint64)[None, :]
        with np.errstate(over="ignore"):
            position = (h1 + i * h2) % np.uint64(self.part_bits)
        return (position >> np.uint64(3)).astype(np.int64), (position & np.uint64(7)).astype(np.uint8)

    def add(self, part: np.ndarray, hashes: np.ndarray) -> None:
        """Set the probes of `hashes` (all of this part) in `part`, in place."""
        index, bit = self._probes(hashes)
        index, bit = index.ravel(), bit.ravel()
        for b in range(8):  # one bit value per pass: repeated indexes write the same byte
            at = index[bit == b]
            part[at] |= np.uint8(1 << b)

    def contains(self, part: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """Whether each of `hashes` (all of this part) may be in `part`."""
        if len(hashes) == 0:
            return np.zeros(0, bool)
        index, bit = self._probes(hashes)
        return ((part[index] >> bit) & np.uint8(1)).astype(bool).all(axis=1)
