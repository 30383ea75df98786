"""cc_net's line hashes for paragraph dedup (Wenzek et al. 2019, cc_net/dedup.py).

A document is split on "\\n" and each line is normalized for dedup, in cc_net's order:
  1. strip surrounding white space (an empty result stays empty)
  2. lowercase
  3. every Unicode decimal digit (Python's \\d) becomes "0"
  4. delete cc_net's Unicode punctuation (the characters of its table in
     normalize.py, deleted here rather than mapped) and the control characters
     U+0000-U+001F and U+007F-U+009F
Its hash is the first 8 bytes of the SHA-1 of the UTF-8 bytes, read as a little-endian
unsigned 64-bit integer (cc_net reinterprets the bytes as numpy uint64 on x86).

line_hashes() does steps 2 and 3 once per document instead of once per line (neither
can turn a character into white space or a newline, so the order does not matter) and
step 4 only on the lines of documents that hold such a character; the result is
cc_net's, line for line (tests/stages/test_lines.py pins it).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from thresher.models.normalize import PUNCT_TO_ASCII

_DELETED = "".join(PUNCT_TO_ASCII) + "".join(map(chr, [*range(0, 32), *range(127, 160)]))
_DROP = re.compile("[" + re.escape(_DELETED) + "]")
_DROP_BUT_NEWLINE = re.compile("[" + re.escape(_DELETED.replace("\n", "")) + "]")
_DIGIT = re.compile(r"\d")
HASH_DTYPE = np.dtype("<u8")


def normalize_for_dedup(line: str) -> str:
    """One line as cc_net's normalize_for_dedup leaves it."""
    line = line.strip()
    if not line:
        return line
    return _DROP.sub("", _DIGIT.sub("0", line.lower()))


def line_hashes(text: str) -> np.ndarray:
    """The hash of each of the document's lines ("\\n"-separated), in order."""
    folded = _DIGIT.sub("0", text.lower())
    lines = folded.split("\n")
    if _DROP_BUT_NEWLINE.search(folded):
        lines = [_DROP.sub("", line.strip()) for line in lines]
    else:
        lines = [line.strip() for line in lines]
    sha1 = hashlib.sha1
    digests = b"".join([sha1(line.encode("utf-8")).digest()[:8] for line in lines])
    return np.frombuffer(digests, HASH_DTYPE).astype(np.uint64)


def documents_per_hash(hashes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(distinct hashes, how many of the documents hold each): a line repeated within
    one document counts once, as in cc_net, whose hash set marks a line seen only when
    a later document brings it again."""
    if not hashes:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    per_doc = np.concatenate([np.unique(h) for h in hashes])
    return np.unique(per_doc, return_counts=True)


def keep_lines(text: str, hashes: np.ndarray, duplicated: np.ndarray) -> tuple[str, int]:
    """cc_net's decision for one document: lines whose hash is `duplicated` (a bool per
    line: held by two documents or more of the group) go, and of the lines left, a line
    repeated within the document keeps its first occurrence. (the new text, lines kept);
    with nothing kept, the text as it was and 0."""
    if not duplicated.any() and len(set(hashes.tolist())) == len(hashes):
        return text, len(hashes)  # nothing to remove: most documents
    lines = text.split("\n")
    seen: set[int] = set()
    kept = []
    for line, h, dup in zip(lines, hashes.tolist(), duplicated.tolist()):
        if not dup and h not in seen:
            kept.append(line)
        seen.add(h)
    if not kept:
        return text, 0
    return "\n".join(kept), len(kept)
