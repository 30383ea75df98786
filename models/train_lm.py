"""Train KenLM models the cc_net way (SentencePiece + 5-gram on normalized text) or
OSCAR's way (word-level on raw text, for the harmful-content filter).

lmplz and build_binary come from the kenlm sdist, built by `make setup` into
tools/kenlm/bin (or found on PATH, or in THRESHER_KENLM_BIN).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable

import sentencepiece

from thresher.models.normalize import normalize


def kenlm_tool(name: str) -> str:
    """Path of lmplz / build_binary, or a clear error saying how to get it."""
    from thresher.models.registry import CHECKOUT

    for folder in (os.environ.get("THRESHER_KENLM_BIN"), "tools/kenlm/bin",
                   CHECKOUT / "tools" / "kenlm" / "bin"):
        if folder and (Path(folder) / name).is_file():
            return str(Path(folder) / name)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"KenLM's {name} not found: run `make setup` (builds it into "
                            "tools/kenlm/bin) or set THRESHER_KENLM_BIN")


def corpus_lines(files: Iterable[str | Path], raw: bool) -> Iterable[str]:
    """Non-empty lines of the corpus files, normalized unless `raw`."""
    for file in files:
        with open(file, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                line = line.strip() if raw else normalize(line)
                if line:
                    yield line


# What `order: auto` tries: each order with and without pruning the n-grams (order >= 2)
# seen once. On a few hundred documents a 5-gram can overfit; the held-out text decides.
AUTO_ORDERS = (2, 3, 4, 5)
AUTO_PRUNES = ((), (0, 1))
HELDOUT_SHARE = 10  # one line in 10 (by a hash of the line) is held out for the choice


def train_lm(lang: str, corpus: list[str | Path], out_dir: str | Path, order: int | str = 5,
             vocab: int = 65536, sentencepiece_model: bool = True, raw: bool = False,
             memory: str = "10%", prune: tuple[int, ...] = ()) -> dict:
    """Write OUT/<lang>.arpa.bin (+ OUT/<lang>.sp.model) and OUT/<lang>.card.json. The
    tools are found first and every file is built in a temporary folder, then moved in:
    a failure leaves no half-built model behind. `order="auto"` picks the order and
    pruning with the lowest perplexity on held-out lines of the corpus, then trains on
    all of it; the card lists every candidate's held-out perplexity."""
    kenlm_tool("lmplz"), kenlm_tool("build_binary")  # a clear error before any work
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="thresher-lm-") as tmp:
        text = Path(tmp) / "corpus.txt"
        lines = 0
        with open(text, "w", encoding="utf-8") as handle:
            for line in corpus_lines(corpus, raw):
                handle.write(line + "\n")
                lines += 1
        if lines == 0:
            raise ValueError(f"corpus {[str(c) for c in corpus]} has no text")
        tokens = text
        vocab_size = None
        if sentencepiece_model:
            sp_model = _train_sentencepiece(text, Path(tmp) / f"{lang}.sp", vocab)
            vocab_size = _vocab_size(sp_model)
            tokens = Path(tmp) / "pieces.txt"
            _encode_file(sp_model, text, tokens)
        selection = None
        if order == "auto":
            order, prune, selection = _choose_order(tokens, Path(tmp), memory)
        _estimate(tokens, Path(tmp) / f"{lang}.arpa.bin", int(order), prune, memory)
        for name in [f"{lang}.arpa.bin"] + ([f"{lang}.sp.model"] if sentencepiece_model else []):
            shutil.move(str(Path(tmp) / name), str(out / name))
    card = {
        "lang": lang, "kind": "sentencepiece+kenlm" if sentencepiece_model else "word kenlm",
        "normalized": not raw, "order": order, "prune": list(prune),
        "discount": "modified Kneser-Ney", "order_selection": selection,
        "vocab": vocab_size,
        "corpus": [str(c) for c in corpus], "lines": lines,
        "corpus_bytes": sum(Path(c).stat().st_size for c in corpus),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 1),
    }
    (out / f"{lang}.card.json").write_text(json.dumps(card, indent=1))
    return card


def _estimate(tokens: Path, binary: Path, order: int, prune: tuple[int, ...],
              memory: str) -> None:
    """lmplz on a token file, then build_binary: binary."""
    lmplz, build_binary = kenlm_tool("lmplz"), kenlm_tool("build_binary")
    arpa = binary.with_name(binary.name.replace(".arpa.bin", "") + ".arpa")
    command = [lmplz, "-o", str(order), "--discount_fallback", "-S", memory,
               "-T", str(binary.parent)]
    if prune:
        command += ["--prune", *map(str, prune)]
    with open(tokens, "rb") as source, open(arpa, "wb") as target:
        _run(command, stdin=source, stdout=target)
    _run([build_binary, str(arpa), str(binary)])
    arpa.unlink()


def _choose_order(tokens: Path, tmp: Path, memory: str) -> tuple[int, tuple, dict]:
    """(order, prune, what was tried): the candidate with the lowest perplexity on the
    held-out lines, trained on the rest."""
    import kenlm

    train, heldout = tmp / "choice-train.txt", []
    with open(tokens, encoding="utf-8") as source, open(train, "w", encoding="utf-8") as kept:
        for line in source:
            if int(hashlib.sha1(line.encode()).hexdigest(), 16) % HELDOUT_SHARE == 0:
                heldout.append(line.rstrip("\n"))
            else:
                kept.write(line)
    if len(heldout) < 5:
        raise ValueError(f"order auto needs held-out text, and {tokens.stat().st_size} bytes "
                         f"of corpus leave {len(heldout)} lines: give an order")
    words = sum(len(line.split()) + 1 for line in heldout)  # + </s>, as KenLM scores it
    tried = []
    for order in AUTO_ORDERS:
        for prune in AUTO_PRUNES:
            binary = tmp / "choice.arpa.bin"
            _estimate(train, binary, order, prune, memory)
            model = kenlm.Model(str(binary))
            log10 = sum(model.score(line, bos=True, eos=True) for line in heldout)
            tried.append({"order": order, "prune": list(prune),
                          "heldout_ppl": round(10 ** (-log10 / words), 3)})
            del model
            binary.unlink()
    best = min(tried, key=lambda t: (t["heldout_ppl"], t["order"]))
    return best["order"], tuple(best["prune"]), {
        "heldout_lines": len(heldout), "criterion": "held-out perplexity",
        "candidates": tried}


def _train_sentencepiece(text: Path, prefix: Path, vocab: int) -> Path:
    # cc_net: unigram, character_coverage 0.9995. The vocabulary is a soft limit so a
    # small reference corpus gets the vocabulary it can support.
    sentencepiece.SentencePieceTrainer.Train(
        input=str(text), model_prefix=str(prefix), vocab_size=vocab, model_type="unigram",
        character_coverage=0.9995, hard_vocab_limit=False, input_sentence_size=2_000_000,
        shuffle_input_sentence=True, minloglevel=2)
    Path(f"{prefix}.vocab").unlink(missing_ok=True)
    return Path(f"{prefix}.model")


def _encode_file(model: Path, text: Path, out: Path) -> None:
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model))
    with open(text, encoding="utf-8") as source, open(out, "w", encoding="utf-8") as target:
        for line in source:
            target.write(" ".join(sp.Encode(line.rstrip("\n"), out_type=str)) + "\n")


def _vocab_size(model: Path) -> int:
    return sentencepiece.SentencePieceProcessor(model_file=str(model)).GetPieceSize()


def _run(command: list[str], **kwargs) -> None:
    result = subprocess.run(command, stderr=subprocess.PIPE, **kwargs)
    if result.returncode:
        raise RuntimeError(f"{Path(command[0]).name} failed ({result.returncode}): "
                           + result.stderr.decode(errors="replace")[-1500:])
