"""KenLM scorers: cc_net's SentencePiece + KenLM document perplexity, and OSCAR's
word-level whole-document perplexity for the harmful-content filter.

Both load published files as they are: cc_net's `lm_dir` (`<lang>.arpa.bin` +
`<lang>.sp.model`) and OSCAR's harmful KenLM binaries (`<lang>.binary` or any KenLM
ARPA/binary file).
"""

from __future__ import annotations

from pathlib import Path

import kenlm
import sentencepiece

from thresher.models.normalize import normalize


def load_kenlm(path: str | Path) -> kenlm.Model:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"KenLM model {path} does not exist")
    try:
        return kenlm.Model(str(path))
    except (OSError, RuntimeError, ValueError) as err:
        raise ValueError(f"{path}: not a KenLM ARPA or binary model ({err})") from err


def perplexity(log10_score: float, length: int) -> float:
    """cc_net's `pp`: 10 ** (-sum of log10 scores / number of scored tokens)."""
    return 10.0 ** (-log10_score / length)


class CCNetLM:
    """One language of a cc_net `lm_dir`: normalize, SentencePiece, 5-gram KenLM."""

    def __init__(self, lm_path: str | Path, sp_path: str | Path):
        self.lm = load_kenlm(lm_path)
        self.sp = sentencepiece.SentencePieceProcessor()
        try:
            self.sp.Load(str(sp_path))
        except (OSError, RuntimeError) as err:
            raise ValueError(f"{sp_path}: not a SentencePiece model ({err})") from err

    def pieces(self, texts: list[str]) -> list[list[str]]:
        """cc_net's `tokenized` field: pieces of the normalized document."""
        return self.sp.Encode([normalize(t) for t in texts], out_type=str)

    def perplexities(self, texts: list[str]) -> list[float]:
        """Document perplexity, rounded to 0.1 as cc_net does.

        Normalization deletes newlines, so a document is one line: its score is the
        KenLM log10 probability of the piece sequence with <s> and </s>, over
        len(pieces) + 1 predicted tokens."""
        return [round(perplexity(self.lm.score(" ".join(p), bos=True, eos=True), len(p) + 1), 1)
                for p in self.pieces(texts)]


class WordLM:
    """OSCAR's harmful-content scoring: the whole document, newlines as spaces, words
    split on white space by KenLM, no normalization and no SentencePiece."""

    def __init__(self, lm_path: str | Path):
        self.lm = load_kenlm(lm_path)

    def perplexities(self, texts: list[str]) -> list[float]:
        out = []
        for text in texts:
            line = text.replace("\n", " ")
            out.append(perplexity(self.lm.score(line, bos=True, eos=True), len(line.split()) + 1))
        return out


def lm_dir_languages(lm_dir: str | Path) -> dict[str, tuple[Path, Path]]:
    """cc_net's layout: {lang: (<lang>.arpa.bin, <lang>.sp.model)} for every pair."""
    lm_dir = Path(lm_dir)
    if not lm_dir.is_dir():
        raise FileNotFoundError(f"lm_dir {lm_dir} is not a directory")
    found = {}
    for lm in sorted(lm_dir.glob("*.arpa.bin")):
        lang = lm.name[: -len(".arpa.bin")]
        sp = lm_dir / f"{lang}.sp.model"
        if sp.is_file():
            found[lang] = (lm, sp)
    return found
