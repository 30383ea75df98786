"""A labelled near-duplicate set built from local text, to measure a dedup method's
precision and recall (tests/test_dedup.py, bench/dedup_quality.py).

Each *original* is three paragraphs of the English Wikipedia sample in the demo crawl.
Around it:
  exact      the same text
  words      a few words changed (3 in about 250)
  frame      a navigation header and a copyright footer added
  case       upper case and doubled spaces and line breaks
  heavy      one word in ten replaced: shares about 40% of its 5-grams; not a copy
  sibling    one of the three paragraphs, with two paragraphs of its own; not a copy
The original and its exact, words, frame and case variants are one *group* of true
duplicates: a method should keep one of them and remove the rest, and remove
nothing else.
"""

from __future__ import annotations

import glob
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

DUPLICATE_KINDS = ("original", "exact", "words", "frame", "case")
DISTINCT_KINDS = ("heavy", "sibling")


def paragraphs(crawl: str | Path, min_words: int = 60, max_words: int = 150) -> list[str]:
    """Distinct paragraphs of the demo crawl's Wikipedia documents, of comparable
    lengths (so that a sibling's one shared paragraph is about a third of it)."""
    files = sorted(glob.glob(f"{crawl}/*.parquet"))
    if not files:
        raise FileNotFoundError(f"no demo crawl in {crawl}: run `make setup` first")
    table = pq.read_table(files, columns=["text", "source"])
    texts = table.filter(pc.equal(table.column("source"), "wikipedia-en")).column("text")
    seen, found = set(), []
    for text in texts.to_pylist():
        for para in text.split("\n"):
            para = " ".join(para.split())
            if min_words <= len(para.split()) <= max_words and para not in seen:
                seen.add(para)
                found.append(para)
    return found


def build(crawl: str | Path, originals: int = 300, seed: int = 0) -> pa.Table:
    """Rows: id, text, url, group (the original's number), kind."""
    rng = random.Random(seed)
    pool = paragraphs(crawl)
    rng.shuffle(pool)
    need = originals * 7  # three for the original, two for each of two siblings
    if len(pool) < need:
        raise ValueError(f"{len(pool)} paragraphs hold {len(pool) // 7} originals, not {originals}")
    vocabulary = sorted({w for p in pool for w in p.split()})
    rows = []
    for g in range(originals):
        own = pool[7 * g: 7 * g + 3]
        fresh = pool[7 * g + 3: 7 * g + 7]
        text = "\n\n".join(own)
        variants = {
            "original": text,
            "exact": text,
            "words": _change_words(text, 3, vocabulary, rng),
            "frame": f"Home | News | Sport | Contact us\n\n{text}\n\n"
                     f"Copyright {2000 + g % 25} Example Media Group. All rights reserved.",
            "case": text.upper().replace(" ", "  ").replace("\n\n", "\n \n\n"),
            "heavy": _change_words(text, len(text.split()) // 10, vocabulary, rng),
            "sibling-1": "\n\n".join([fresh[0], own[1], fresh[1]]),
            "sibling-2": "\n\n".join([fresh[2], fresh[3], own[2]]),
        }
        for kind, body in variants.items():
            rows.append({"id": f"g{g:04d}-{kind}", "text": body,
                         "url": f"https://site{rng.randrange(10**6)}.invalid/{g}/{kind}",
                         "group": g, "kind": kind.split("-")[0]})
    rng.shuffle(rows)
    return pa.Table.from_pylist(rows)


def _change_words(text: str, count: int, vocabulary: list[str], rng: random.Random) -> str:
    words = text.split(" ")
    for i in rng.sample(range(len(words)), count):
        words[i] = rng.choice(vocabulary)
    return " ".join(words)


def score(table: pa.Table, removed: set[str]) -> dict:
    """Precision and recall of the removals, and the groups lost (every member
    removed), for the set `table` and the ids a method removed."""
    groups: dict[int, list[str]] = {}
    for doc_id, group, kind in zip(table.column("id").to_pylist(),
                                   table.column("group").to_pylist(),
                                   table.column("kind").to_pylist()):
        if kind in DUPLICATE_KINDS:
            groups.setdefault(group, []).append(doc_id)
    should = sum(len(ids) - 1 for ids in groups.values())
    right = sum(min(len(removed & set(ids)), len(ids) - 1) for ids in groups.values())
    lost = sum(all(i in removed for i in ids) for ids in groups.values())
    wrong_kind = {k: 0 for k in DISTINCT_KINDS}
    for doc_id, kind in zip(table.column("id").to_pylist(), table.column("kind").to_pylist()):
        if kind in wrong_kind and doc_id in removed:
            wrong_kind[kind] += 1
    return {"removed": len(removed), "should_remove": should, "correct": right,
            "precision": right / len(removed) if removed else 1.0,
            "recall": right / should if should else 1.0, "groups_lost": lost,
            "heavy_removed": wrong_kind["heavy"], "siblings_removed": wrong_kind["sibling"]}
