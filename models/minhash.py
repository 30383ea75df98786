"""MinHash signatures and the keys that deduplication groups documents by
(Broder 1997; the parameters and the hash arithmetic of datatrove's MinhashConfig).

A batch of texts is hashed at once: the batch's words are hashed once per distinct
word, the word 5-grams are combined in numpy, and the 112 permutations run over all
the batch's shingles as one matrix. Every document then gets up to 16 64-bit *keys*:
one per band of 8 minimum hashes, one for its normalized text (exact duplicates) and
one for its normalized URL. Two documents that share any key are candidates.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.models.normalize import normalize

MERSENNE = np.uint64((1 << 61) - 1)
_ASCII_PUNCT = re.compile(r"[!-/:-@\[-`{-~]+")
_MIX = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's constants
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
MAX_SHINGLES = 1 << 15  # shingles per permutation block: about 30 MB of uint64 at once


@dataclass(frozen=True)
class MinHashSettings:
    bands: int = 14
    rows: int = 8
    ngram: int = 5
    seed: int = 1
    # "thresher": words of dedup_words, hashed and combined in numpy; "datatrove": the
    # shingles of datatrove's MinhashDedupSignature with HashConfig(hash_fc="sha1",
    # precision=64), as FineWeb ran it (see datatrove_shingles).
    shingles: str = "thresher"

    @property
    def num_hashes(self) -> int:
        return self.bands * self.rows


# The index records this with its settings: a change to dedup_words or to the key
# arithmetic makes keys that never match the old ones, so it must bump the version.
FORMAT_VERSION = 2  # 2: whitespace runs (line breaks, tabs) become a space first


def dedup_words(text: str) -> str:
    """The text as dedup compares it: every run of whitespace (line breaks and tabs
    included) one space, as datatrove's word split sees it; then cc_net's
    normalization (lower case, no accents, digits as 0, Unicode punctuation as ASCII,
    which deletes control characters: a line break left there would glue two words),
    then no punctuation and single spaces, so that a change of case, spacing or
    punctuation is not a difference."""
    return " ".join(_ASCII_PUNCT.sub(" ", normalize(" ".join(text.split()))).split())


def digest64(value: str, tag: str) -> int:
    """A 64-bit hash of a string, in a key space of its own (`tag`)."""
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8,
                                          person=tag.encode()[:16]).digest(), "little")


def url_form(url: str) -> str:
    """A URL as dedup compares it: no scheme, no `www.`, lower-case host, no fragment,
    no trailing slash; the query is kept (it often names the page)."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").removeprefix("www.")
    path = parts.path.rstrip("/")
    return f"{host}{path}" + (f"?{parts.query}" if parts.query else "")


class MinHasher:
    def __init__(self, settings: MinHashSettings = MinHashSettings()):
        self.settings = settings
        # datatrove's permutations: h(x) = (a x + b) mod (2^61 - 1), a and b from a
        # seeded RandomState, the product wrapping at 64 bits as numpy does.
        gen = np.random.RandomState(settings.seed)
        self.a = gen.randint(1, MERSENNE, dtype=np.uint64, size=(1, settings.num_hashes))
        self.b = gen.randint(0, MERSENNE, dtype=np.uint64, size=(1, settings.num_hashes))
        self._words = None  # datatrove's word tokenizer, for its shingles
        self._band_salt = np.array([digest64(f"band{i}", "thresher-band")
                                    for i in range(settings.bands)], np.uint64)

    def shingles(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The hashed word n-grams of each text (space-separated words): one flat
        uint64 array and the offsets of each text's shingles in it. A text shorter
        than n words is one shingle of all its words; an empty text has none."""
        n = self.settings.ngram
        # An empty text as null: split, "" would be one empty word.
        split = pc.utf8_split_whitespace(pa.array([w or None for w in words], pa.string()))
        flat = pc.list_flatten(split)
        counts = pc.fill_null(pc.list_value_length(split), 0).to_numpy(
            zero_copy_only=False).astype(np.int64)
        encoded = pc.dictionary_encode(flat).combine_chunks() if isinstance(
            flat, pa.ChunkedArray) else pc.dictionary_encode(flat)
        vocab = np.fromiter((digest64(w, "thresher-word") for w in encoded.dictionary.to_pylist()),
                            np.uint64, len(encoded.dictionary))
        token = vocab[encoded.indices.to_numpy(zero_copy_only=False)] if len(flat) else \
            np.zeros(0, np.uint64)
        starts = np.concatenate([[0], np.cumsum(counts)])[:-1]
        # Shingle j of the flat array combines tokens j..j+n-1 (a polynomial in them,
        # wrapping at 64 bits); only those inside one text are kept.
        span = np.minimum(counts, n)  # a short text: one shingle of all its words
        per_text = np.where(counts >= n, counts - n + 1, (counts > 0).astype(np.int64))
        offsets = np.concatenate([[0], np.cumsum(per_text)])
        first = np.repeat(starts, per_text) + (np.arange(offsets[-1]) - np.repeat(offsets[:-1], per_text))
        width = np.repeat(span, per_text)
        shingle = np.zeros(offsets[-1], np.uint64)
        for i in range(n):
            inside = i < width
            term = np.zeros(offsets[-1], np.uint64)
            term[inside] = token[first[inside] + i]
            shingle = shingle * _MIX + term
        return _finalize(shingle), offsets

    def datatrove_shingles(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """datatrove's shingles: the n-grams of word_tokenize(simplify_text(text)) joined
        by spaces, each hashed by the first 8 bytes of its SHA-1 (little-endian). A text
        of fewer than n words has none (datatrove writes no signature for it)."""
        if self._words is None:
            from thresher.models.datatrove_words import DatatroveWords

            self._words = DatatroveWords()
        n, sha1 = self.settings.ngram, hashlib.sha1
        flat: list[int] = []
        counts = np.zeros(len(texts), np.int64)
        for t, text in enumerate(texts):
            words = self._words.words(text or "")
            grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
            flat.extend(int.from_bytes(sha1(g.encode()).digest()[:8], "little") for g in grams)
            counts[t] = len(grams)
        return np.array(flat, np.uint64), np.concatenate([[0], np.cumsum(counts)])

    def signatures(self, words: list[str]) -> np.ndarray:
        """(texts, num_hashes) uint64 minimum hashes; a text with no words gets the
        maximum value everywhere (and the caller gives it no band keys)."""
        return self.sign(*self.shingles(words))

    def sign(self, shingle: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """The signatures of sets of shingles: text i's are shingle[offsets[i]:offsets[i+1]]."""
        counts = np.diff(offsets)
        sig = np.full((len(counts), self.settings.num_hashes), np.iinfo(np.uint64).max, np.uint64)
        owner = np.repeat(np.arange(len(counts)), counts)
        for start in range(0, len(shingle), MAX_SHINGLES):
            block = shingle[start:start + MAX_SHINGLES, None]
            hashed = block * self.a
            hashed += self.b
            _mod_mersenne(hashed)
            _min_rows(sig, owner[start:start + MAX_SHINGLES], hashed)
        return sig

    def band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """(texts, bands) uint64: each band's `rows` hashes folded into one key, salted
        by the band's number so that equal values in two bands are not a match."""
        s = self.settings
        bands = signatures.reshape(len(signatures), s.bands, s.rows)
        key = np.broadcast_to(self._band_salt, (len(signatures), s.bands)).copy()
        for r in range(s.rows):
            key = _finalize(key * _MIX + bands[:, :, r])
        return key


def _min_rows(sig: np.ndarray, owner: np.ndarray, hashed: np.ndarray) -> None:
    """sig[t] = min(sig[t], min of hashed rows owned by text t); owner is sorted."""
    if not len(owner):
        return
    edges = np.flatnonzero(np.diff(owner)) + 1
    starts = np.concatenate([[0], edges])
    mins = np.minimum.reduceat(hashed, starts, axis=0)
    texts = owner[starts]
    sig[texts] = np.minimum(sig[texts], mins)


def _mod_mersenne(x: np.ndarray) -> None:
    """x mod (2^61 - 1) in place, without a division: (x & p) + (x >> 61) < 2p.
    (Twice as fast as numpy's %, which divides.)"""
    high = x >> np.uint64(61)
    x &= MERSENNE
    x += high
    np.subtract(x, MERSENNE, out=x, where=x >= MERSENNE)


def _finalize(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads every input bit over the 64 output bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))
