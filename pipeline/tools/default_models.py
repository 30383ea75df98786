"""The default models of the embedded run, built from local material only.

  ccnet/   cc_net lm_dir: SentencePiece + 5-gram KenLM per language, trained on
           normalized reference text: English from the Wikipedia sample in gensim's
           test data; German, French and Spanish from the Debian Administrator's
           Handbook (which is also in the demo crawl, so those pages score low there).
  quality/ a fastText quality classifier in DCLM's manner (model.bin, card.json): label
           hq for reference text (the Wikipedia sample, the handbook's paragraphs), lq
           for the demo's generated junk pages and fortunes, word bigrams, as DCLM's
           classifier was trained (positive: instruction data; negative: RefinedWeb).
  harm/    Spanish harmful-content KenLM (word-level, raw text, OSCAR's variant) on
           Debian's offensive Spanish fortunes, a reference LM of the same kind on the
           ordinary Spanish fortunes (for the cross-entropy-difference rule), each of
           the order chosen on held-out lines, and es.tau.json: tau fitted on a
           validation split for both rules, scored on a test split, and the rule with
           the better validation macro-F1 (`best`), which the harm stage uses.

These are demo-sized. Real runs should point `ccnet.lm_dir` at cc_net's Wikipedia
LMs and `harm.models` at OSCAR's harmful KenLMs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from thresher.models.harm_tau import best_rule, evaluate, sweep_tau
from thresher.models.kenlm_lm import WordLM
from thresher.models.train_lm import train_lm
from thresher.pipeline.io import demo_crawl

log = logging.getLogger(__name__)

HANDBOOK_LANGS = {"de": "de-DE", "fr": "fr-FR", "es": "es-ES"}
SPLIT = {"train": range(0, 6), "validation": range(6, 8), "test": range(8, 10)}
BUILD_VERSION = 3  # 2: offensive fortunes ROT13-decoded; 3: harmful LMs' order auto
CCNET_VOCAB = 8000  # cc_net used 65536 on full Wikipedia; these corpora are a few MB


def build_default_models(crawl: Path, out: Path) -> dict:
    out = Path(out)
    build_quality(Path(crawl), out / "quality")  # stamped on its own: added later
    stamp = out / "_BUILD.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("version") == BUILD_VERSION:
        return json.loads(stamp.read_text())
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="thresher-ref-") as tmp:
        corpora = reference_corpora(Path(crawl), Path(tmp))
        cards = {lang: train_lm(lang, [path], out / "ccnet", vocab=CCNET_VOCAB)
                 for lang, path in corpora.items()}
        harm = build_harmful_es(out / "harm", Path(tmp))
    summary = {"version": BUILD_VERSION, "ccnet": cards, "harm": harm,
               "seconds": round(time.time() - started, 1)}
    stamp.write_text(json.dumps(summary, indent=1))
    return summary


QUALITY_VERSION = 1


def build_quality(crawl: Path, out: Path) -> dict:
    """The default quality classifier (see the module's docstring); one document in ten
    held out, and its accuracy on them in card.json."""
    import random

    import fasttext

    card_path = out / "card.json"
    if card_path.exists() and json.loads(card_path.read_text()).get("version") == QUALITY_VERSION:
        return json.loads(card_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="thresher-quality-") as tmp:
        positive = [p for path in reference_corpora(crawl, Path(tmp)).values()
                    for p in path.read_text(encoding="utf-8").splitlines()]
    table = pq.read_table(sorted(crawl.glob("part-*.parquet")), columns=["text", "source"])
    negative = [t for t, s in zip(table.column("text").to_pylist(),
                                  table.column("source").to_pylist())
                if s.startswith("junk") or s.startswith("fortunes")]
    rng = random.Random(0)
    rng.shuffle(positive)
    rng.shuffle(negative)
    size = min(len(positive), len(negative), 20000)
    rows = [("hq", t) for t in positive[:size]] + [("lq", t) for t in negative[:size]]
    rng.shuffle(rows)
    held = len(rows) // 10
    with tempfile.TemporaryDirectory(prefix="thresher-quality-") as tmp:
        train = Path(tmp) / "train.txt"
        train.write_text("".join(f"__label__{label} {' '.join(text.split())}\n"
                                 for label, text in rows[held:]), encoding="utf-8")
        model = fasttext.train_supervised(str(train), epoch=5, wordNgrams=2, dim=32,
                                          thread=1, seed=1, verbose=0)
    model.save_model(str(out / "model.bin"))
    right = sum(model.predict(" ".join(text.split()))[0][0] == f"__label__{label}"
                for label, text in rows[:held])
    card = {"version": QUALITY_VERSION, "labels": ["hq", "lq"], "trained_on": len(rows) - held,
            "held_out": held, "held_out_accuracy": round(right / max(held, 1), 4),
            "hq": "Wikipedia sample (gensim) and Debian handbook paragraphs",
            "lq": "the demo crawl's generated junk pages and fortunes"}
    card_path.write_text(json.dumps(card, indent=1))
    return card


def reference_corpora(crawl: Path, tmp: Path) -> dict[str, Path]:
    """One paragraph a line, per language."""
    paragraphs: dict[str, list[str]] = {"en": []}
    for doc in demo_crawl.wikipedia():
        paragraphs["en"] += doc["text"].split("\n")
    table = pq.read_table(sorted(crawl.glob("part-*.parquet")), columns=["text", "url", "source"]) \
        if crawl.is_dir() else None
    for lang, folder in HANDBOOK_LANGS.items():
        if table is None:
            break
        rows = table.filter(pc.and_(pc.equal(table.column("source"), "debian-handbook"),
                                    pc.match_substring(table.column("url"), f"/{folder}/")))
        paragraphs[lang] = [p for text in rows.column("text").to_pylist() for p in text.split("\n")]
    files = {}
    for lang, lines in paragraphs.items():
        lines = [l.strip() for l in lines if len(l.strip()) > 20]
        if not lines:
            log.warning("no reference text for %s; no CCNet model for it", lang)
            continue
        files[lang] = tmp / f"{lang}.txt"
        files[lang].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files


def fortune_split(text: str) -> str:
    """A stable train/validation/test split (60/20/20) by a hash of the text."""
    bucket = int(hashlib.sha1(text.encode()).hexdigest(), 16) % 10
    return next(name for name, r in SPLIT.items() if bucket in r)


def spanish_fortunes() -> dict[str, dict[str, list[str]]]:
    """{"harmful"/"clean": {split: [documents]}} from fortunes-es-off / fortunes-es."""
    sets: dict[str, dict[str, list[str]]] = {"harmful": {}, "clean": {}}
    for doc in demo_crawl.fortunes():
        label = {"fortunes-es-off": "harmful", "fortunes-es": "clean"}.get(doc["source"])
        if label:
            sets[label].setdefault(fortune_split(doc["text"]), []).append(doc["text"])
    return sets


def build_harmful_es(out: Path, tmp: Path) -> dict:
    sets = spanish_fortunes()
    if not sets["harmful"].get("train") or not sets["clean"].get("train"):
        raise RuntimeError("Debian's fortunes-es and fortunes-es-off are needed (apt-get install "
                           "fortunes-es fortunes-es-off)")
    # One document a line: KenLM sees each fortune whole, newlines as spaces.
    for label in ("harmful", "clean"):
        (tmp / f"{label}.txt").write_text(
            "\n".join(t.replace("\n", " ") for t in sets[label]["train"]) + "\n", encoding="utf-8")
    # The order (and pruning) each LM gets is chosen on held-out lines of its corpus.
    train_lm("es", [tmp / "harmful.txt"], out, order="auto", sentencepiece_model=False, raw=True)
    train_lm("es.ref", [tmp / "clean.txt"], out, order="auto", sentencepiece_model=False,
             raw=True)
    result = fit_and_test(out / "es.arpa.bin", out / "es.ref.arpa.bin", sets)
    (out / "es.tau.json").write_text(json.dumps(result, indent=1))
    return result


def fit_and_test(model: Path, reference: Path, sets) -> dict:
    """tau by the paper's macro-F1 sweep on validation, for both rules; scores on test."""
    harm, ref = WordLM(model), WordLM(reference)

    def scores(texts):
        h = harm.perplexities(texts)
        r = ref.perplexities(texts)
        return h, [math.log(a) - math.log(b) for a, b in zip(h, r)]

    val = {label: scores(sets[label]["validation"]) for label in ("harmful", "clean")}
    test = {label: scores(sets[label]["test"]) for label in ("harmful", "clean")}
    result = {"dev_set": {label: {s: len(v) for s, v in sets[label].items()} for label in sets},
              "split": "sha1(text) % 10: 0-5 train, 6-7 validation, 8-9 test"}
    for i, rule in enumerate(("ppl", "xent")):
        fitted = sweep_tau(val["harmful"][i], val["clean"][i], log=(rule == "ppl"))
        result[rule] = {"tau": fitted["tau"], "method": fitted["method"],
                        "validation": fitted,
                        "test": evaluate(test["harmful"][i], test["clean"][i], fitted["tau"])}
    result["best"] = best_rule(result)  # chosen on validation; test only reports
    return result
