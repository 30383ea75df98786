"""MinHash and the dedup keys (models/minhash.py, stages/dedup.py), called directly."""

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher.models.minhash import MinHasher, MinHashSettings, dedup_words, url_form
from thresher.stages.dedup import Dedup


def candidate(hasher: MinHasher, sig_a, sig_b) -> bool:
    keys = hasher.band_keys(np.stack([sig_a, sig_b]))
    return bool((keys[0] == keys[1]).any())


def test_detection_probability_follows_the_banding_curve():
    """Pairs of shingle sets with a known Jaccard similarity s become candidates with
    probability 1-(1-s^8)^14 (fixed seed; each level within 4 standard errors)."""
    hasher = MinHasher()
    rng = np.random.default_rng(7)
    pairs = 400
    for s in (0.4, 0.55, 0.7, 0.8, 0.9):
        union = 300
        shared = round(s * union)
        hits = 0
        for _ in range(pairs):
            pool = rng.integers(1, 2**63, size=union, dtype=np.uint64)
            common, rest = pool[:shared], pool[shared:]
            half = len(rest) // 2
            a = np.concatenate([common, rest[:half]])
            b = np.concatenate([common, rest[half:]])
            jaccard = shared / union
            sig = hasher.sign(np.concatenate([a, b]), np.array([0, len(a), len(a) + len(b)]))
            hits += candidate(hasher, sig[0], sig[1])
        expected = 1 - (1 - jaccard ** 8) ** 14
        error = math.sqrt(expected * (1 - expected) / pairs)
        assert abs(hits / pairs - expected) <= 4 * error + 1e-9, (s, hits / pairs, expected)


def test_signature_agreement_estimates_jaccard():
    hasher = MinHasher()
    rng = np.random.default_rng(1)
    pool = rng.integers(1, 2**63, size=1000, dtype=np.uint64)
    a, b = pool[:750], pool[250:]  # Jaccard 500/1000
    sig = hasher.sign(np.concatenate([a, b]), np.array([0, 750, 1500]))
    assert abs((sig[0] == sig[1]).mean() - 0.5) < 0.12  # 112 hashes: sd about 0.047


def test_dedup_words_ignores_case_spacing_punctuation_digits_and_accents():
    assert dedup_words("  Hello,   WORLD!\n\nIt's 2024 — café.") == \
        dedup_words("hello world it s 1999 - cafe")
    assert dedup_words("") == ""


def test_url_form():
    assert url_form("https://www.Example.com/a/b/?q=1#top") == "example.com/a/b?q=1"
    assert url_form("http://example.com/a/b") == url_form("https://example.com/a/b/")
    assert url_form("https://example.com/a?q=1") != url_form("https://example.com/a?q=2")


def test_shingles_of_short_and_empty_texts():
    hasher = MinHasher(MinHashSettings(ngram=5))
    shingle, offsets = hasher.shingles(["a b c d e f", "a b", "", "a b c d e"])
    assert np.diff(offsets).tolist() == [2, 1, 0, 1]
    # the same words in the same order give the same shingle, whatever the text
    first, last = shingle[offsets[0]], shingle[offsets[3]]
    assert first == last


def test_signatures_do_not_depend_on_the_batch():
    hasher = MinHasher()
    texts = ["one two three four five six seven", "alpha beta gamma delta epsilon zeta"]
    together = hasher.signatures(texts)
    alone = np.vstack([hasher.signatures([t]) for t in texts])
    assert (together == alone).all()


def keys_of(texts, urls=None, **params):
    stage = Dedup(**params)
    table = pa.table({"text": texts, **({"url": urls} if urls else {})})
    return stage.keys(table)


def test_keys_layout_bands_then_text_and_the_url_apart():
    text = "the committee published its annual report on the state of public libraries"
    keys, urls = keys_of([text, text.upper() + "  !", "", text],
                         ["https://a.invalid/x", None, None, "http://www.a.invalid/x/"])
    assert keys.shape == (4, 15) and urls.shape == (4,)
    assert (keys[0] == keys[1]).all()  # same words: every band and the text key
    assert urls[0] != 0 and urls[1] == 0  # no URL: no URL key
    assert (keys[2] == 0).all() and urls[2] == 0  # no words and no URL: no key at all
    assert urls[0] == urls[3]  # the same page under another form of its URL
    assert len(set(keys[0, :14].tolist())) == 14  # salted: bands never match each other


def test_line_breaks_and_tabs_are_spaces_before_words_are_taken():
    """A line break must not glue two words (cc_net's normalization deletes control
    characters): the same text with line breaks or tabs for spaces has the same keys,
    as datatrove's word split gives it Jaccard 1.0."""
    spaced = "the quick brown fox jumps over the lazy dog and runs far away from home"
    broken = spaced.replace(" ", "\n", 3).replace(" ", "\t", 2).replace(" ", "\r\n", 1)
    assert dedup_words("fox\njumps") == "fox jumps"
    assert dedup_words(broken) == spaced
    keys, _ = keys_of([spaced, broken])
    assert (keys[0] == keys[1]).all()


def test_keys_of_light_edits_share_a_band():
    rng = np.random.default_rng(3)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    words = ["".join(rng.choice(letters, 6)) for _ in range(300)]
    base = " ".join(words)
    edited = " ".join(["other" if i in (10, 200) else w for i, w in enumerate(words)])
    framed = "Home | News | Contact\n" + base + "\nCopyright 2024 Example"
    keys, _ = keys_of([base, edited, framed], near=True, exact=False, url=False)
    assert (keys[0] == keys[1]).any() and (keys[0] == keys[2]).any()


@pytest.mark.parametrize("bad", [{"bands": 0}, {"rows": -1}, {"near": False, "exact": False,
                                                               "url": False},
                                 {"partitions": 0}, {"scope": "world"},
                                 {"url_crawls": "keep_last"}])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        Dedup(**bad)


def test_the_stage_needs_the_dedup_step():
    with pytest.raises(RuntimeError, match="dedup step"):
        Dedup()(pa.table({"text": ["a"], "id": ["x"], "source_shard": ["s"],
                          "source_row": [0]}))


def test_datatrove_shingles_give_datatroves_sha1_signatures_on_demo_documents():
    """shingles: datatrove signs as datatrove's MinhashDedupSignature with FineWeb's hash
    configuration (SHA-1, 64 bits, 14 x 8, 5-grams): the same 112 minimum hashes for
    each document, and no signature for a text of fewer than 5 words."""
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.utils.hashing import HashConfig

    crawl = Path(__file__).resolve().parents[2] / "data" / "demo-crawl"
    texts = [t for p in sorted(crawl.glob("*.parquet"))[:2]
             for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()[:150]]
    texts += ["", "four words only here", "Café, déjà vu: 1999 — 5km at 10am!!", "a b c d e"]
    peer = MinhashDedupSignature(output_folder="/tmp/unused", config=MinhashConfig(
        hash_config=HashConfig(hash_fc="sha1", precision=64)))
    hasher = MinHasher(MinHashSettings(shingles="datatrove"))
    shingle, offsets = hasher.datatrove_shingles(texts)
    ours = hasher.sign(shingle, offsets)
    for i, text in enumerate(texts):
        theirs = peer.get_shingles(text)
        assert np.diff(offsets)[i] == theirs.size
        if theirs.size:
            expected = np.array(peer.get_signature(theirs), np.uint64).reshape(-1)
            assert ours[i].tolist() == expected.tolist()
    # "", four words, eight words (cafe deja vu 0 0 km at 0am), five words
    assert np.diff(offsets)[-4:].tolist() == [0, 0, 4, 1]
