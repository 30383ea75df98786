"""datatrove's words of a text, `word_tokenize(simplify_text(text))`, the same list
faster: the words that datatrove's n-gram steps (decontamination, MinHash) hash.

simplify_text lowercases, maps digits to 0, turns punctuation into spaces, folds
white space and strips accents. spaCy's tokenizer then splits each piece between
single spaces on its own, so each distinct piece is tokenized once per worker (the
new ones of a document in one spaCy call) and remembered. A piece of letters in any
script that is not one of spaCy's special cases is one word without asking spaCy: its
prefix, suffix and infix rules all need a character that is not a letter (none of the
261,777 such pieces of the demo crawl is split).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import replace

from thresher.models.normalize import strip_accents

MAX_PIECES = 1_000_000  # remembered pieces per worker before the memory starts again


class DatatroveWords:
    def __init__(self, language: str = "en", norm_config=None):
        from datatrove.utils.text import TextNormConfig
        from datatrove.utils.word_tokenizers import load_word_tokenizer

        self.norm = norm_config or TextNormConfig()
        self.tokenizer = load_word_tokenizer(language)
        # simplify_text less its last step (NFD, combining marks dropped), done after
        # by strip_accents and only where the text is not ASCII.
        self._ascii_norm = replace(self.norm, norm_unicode_diacritics=False)
        self.known: dict[str, tuple[str, ...]] = {}
        self._special = set(self.tokenizer.tokenizer.tokenizer.rules)

    def words(self, text: str) -> list[str]:
        known = self.known
        return [word for piece in self.pieces(text)[0] for word in known[piece]]

    def pieces(self, text: str) -> tuple[list[str], dict[str, tuple[str, ...]]]:
        """The simplified text's pieces, and the words of those seen for the first time
        (for a caller that keeps its own table by piece); `known` has them all."""
        from datatrove.utils.text import simplify_text

        norm = self._ascii_norm
        if not (norm.norm_weekdays or norm.norm_monthnames):
            simple = _simplify(text, norm)
        else:
            simple = simplify_text(text, norm)
        if self.norm.norm_unicode_diacritics and not simple.isascii():
            # simplify_text's last step (NFD, then no character of category Mn), as
            # cc_net's normalization strips accents: the same step
            simple = strip_accents(simple).strip()
        pieces = simple.split(" ")
        known = self.known
        new = set(pieces).difference(known)
        if not new:
            return pieces, {}
        if len(known) > MAX_PIECES:
            known.clear()
            new = set(pieces)
        special = self._special
        words = {p: (p,) for p in new if p.isalpha() and p not in special}
        rest = [p for p in new if p not in words]
        if rest:
            words.update(self.tokenize_pieces(rest))
        known.update(words)
        return pieces, words

    def tokenize_pieces(self, pieces: list[str]) -> dict[str, tuple[str, ...]]:
        """Each piece's words, from one spaCy call over the pieces joined by spaces
        (tokens keep their offsets, so each goes back to its piece), stripped and
        without empty ones as datatrove's word_tokenize returns them."""
        nlp = self.tokenizer.tokenizer
        joined = " ".join(pieces)
        starts, at = [], 0
        for piece in pieces:
            starts.append(at)
            at += len(piece) + 1
        words: list[list[str]] = [[] for _ in pieces]
        nlp.max_length = len(joined) + 10
        with nlp.memory_zone():
            for token in nlp(joined, disable=["parser", "tagger", "ner"]):
                word = token.text.strip()
                if word:
                    words[bisect_right(starts, token.idx) - 1].append(word)
        return {piece: tuple(w) for piece, w in zip(pieces, words)}

    def special_cases(self) -> set[str]:
        return self._special


_PUNCTUATION: tuple | None = None


def _punctuation() -> tuple[bytes, re.Pattern]:
    """datatrove's punctuation table (every character it maps goes to a space) as a
    byte table for ASCII text and one character class for the rest: all in the BMP,
    so Python's regex engine tests a character against a bitmap."""
    global _PUNCTUATION
    if _PUNCTUATION is None:
        from datatrove.utils.text import PUNCTUATION_TRANS

        assert set(PUNCTUATION_TRANS.values()) == {32} and max(PUNCTUATION_TRANS) < 0x10000
        ascii_keys = bytes(k for k in PUNCTUATION_TRANS if k < 128)
        _PUNCTUATION = (bytes.maketrans(ascii_keys, b" " * len(ascii_keys)),
                        re.compile("[" + re.escape("".join(map(chr, PUNCTUATION_TRANS))) + "]"))
    return _PUNCTUATION


def _simplify(text: str, norm) -> str:
    """simplify_text without its unicode step (done after, where needed), the same steps
    with datatrove's own number pattern and punctuation table: the table applied to an
    ASCII text's bytes in one C pass, to any other text by one character class (where
    str.translate looks every character up in a dict), and white space folded by
    split/join (str.split splits on the characters that the regex class of white
    space matches)."""
    from datatrove.utils.text import NUMBERS_PATTERN

    if norm.lowercase:
        text = text.lower()
    if norm.norm_numbers:
        text = NUMBERS_PATTERN.sub("0", text)
    if norm.remove_punctuation:
        table, pattern = _punctuation()
        text = (text.encode("ascii").translate(table).decode("ascii") if text.isascii()
                else pattern.sub(" ", text))
    if norm.norm_whitespace:
        return " ".join(text.split())
    return text.strip()
