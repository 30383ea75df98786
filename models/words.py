"""Words and sentences per language, as datatrove's filters split them, only faster.

datatrove picks a word tokenizer per language (its `tokenizer_assignment.csv`): spaCy's
blank pipeline for most languages, its sentencizer for sentences, and its
WhitespaceTokenizer where it has none. spaCy's tokenizer cuts text at whitespace and
then splits each whitespace-free chunk alone (prefixes, suffixes, infixes, exceptions),
so a chunk always splits the same way. `FastSpacyTokenizer` remembers each chunk's
tokens: a document costs a dict lookup per word, and the chunks not seen yet go to
spaCy in one call. The result is spaCy's, token for token (`tests/test_heuristics.py`
compares it with datatrove's on the demo crawl).

Two things are not per chunk, and are done as spaCy does them. spaCy applies its
exceptions once more over the whole document (a phrase matcher on the tokens), and a
match may run across a space: it merges nothing there, but it hides the matches it
overlaps (`Tattoo'' ''Executive`). Where two chunks one space apart could hold an
exception's pattern across that space (one ends with the text of its first tokens, the
other starts with the rest), they go to spaCy together.
And the sentencizer sees whitespace tokens (a whitespace run other than one space).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from datatrove.utils.word_tokenizers import (SpaCyTokenizer, WhitespaceTokenizer, WordTokenizer,
                                             load_word_tokenizer)

log = logging.getLogger(__name__)

CACHE_LIMIT = 250_000  # chunks per generation and language (two: some tens of MB)
_RUN = re.compile(r"\S+|\s+")


@lru_cache(maxsize=None)
def word_tokenizer(language: str) -> WordTokenizer:
    """The tokenizer datatrove's filters would use for `language`, as fast as it gets:
    spaCy-based ones are wrapped in FastSpacyTokenizer, others (Thai, Korean, ...) are
    datatrove's own."""
    tokenizer = datatrove_tokenizer(language)
    if type(tokenizer) in (SpaCyTokenizer, WhitespaceTokenizer):
        return FastSpacyTokenizer(tokenizer)
    return tokenizer


@lru_cache(maxsize=None)
def datatrove_tokenizer(language: str) -> WordTokenizer:
    """datatrove's word tokenizer for the language; where datatrove has none, or it
    cannot load here (Japanese without SudachiPy), its WhitespaceTokenizer."""
    try:
        tokenizer = load_word_tokenizer(language)
        tokenizer.word_tokenize("a b")  # loads it: a missing package shows here
        return tokenizer
    except (ImportError, OSError, ValueError) as err:
        log.warning("no word tokenizer for language %r here (%s); using datatrove's "
                    "WhitespaceTokenizer", language, err)
        return WhitespaceTokenizer()


class FastSpacyTokenizer(WordTokenizer):
    """A datatrove WordTokenizer giving what `inner` gives, with spaCy's work memoized
    per chunk. Passed as `language=` to datatrove's filters, it is what they split with."""

    def __init__(self, inner: WordTokenizer):
        super().__init__(getattr(inner, "language", None))
        self.inner = inner
        whitespace = type(inner) is WhitespaceTokenizer
        self.nlp = inner._spacy_xx.tokenizer if whitespace else inner.tokenizer
        # WhitespaceTokenizer splits sentences with a regex, not spaCy: keep its own
        self._spacy_sentences = not whitespace
        # chunk -> (its tokens, what may follow it in an exception, may it start one's rest)
        self._chunks: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {}
        self._old: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {}
        self._punct: dict[str, bool] = {}
        self._exception_keys = frozenset(self.nlp.tokenizer.rules or {})
        self._affixes_only = _affixes_only(self.nlp)
        self._splits = _exception_splits(self.nlp, self._affixes_only)
        self._shaped: dict[str, bool] = {}
        spanning = [k for k in self.nlp.tokenizer.rules or {}
                    if k.strip() and any(c.isspace() for c in k)]
        self._spanning = re.compile("|".join(map(re.escape, spanning))) if spanning else None
        self._rights = {r for rights in self._splits.values() for r in rights}
        self._longest = max(map(len, [*self._splits, *self._rights]), default=0)
        self._punct_chars = self.nlp.get_pipe("sentencizer").punct_chars

    # -- datatrove's WordTokenizer interface

    def word_tokenize(self, text: str) -> list[str]:
        chunks = text.split()
        known = self._known(chunks)
        spans = self._holds_spanning_exception(text)
        if self._exception_may_cross(chunks, known, spans):
            return self._words_across(text, known, spans)
        out: list[str] = []
        for chunk in chunks:
            out.extend(known[chunk][0])
        return out

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        """Sentence spans, as spaCy's sentencizer marks them."""
        if not self._spacy_sentences:
            return self.inner.span_tokenize(text)
        chunks = text.split()
        known = self._known(chunks)
        spans = self._holds_spanning_exception(text)
        tokens = self._tokens_at(text, known, spans,
                                 join=self._exception_may_cross(chunks, known, spans))
        starts = self._sentence_starts([t for t, _ in tokens])
        ends = [i - 1 for i in starts[1:]] + [len(tokens) - 1]
        return [(tokens[a][1], tokens[b][1] + len(tokens[b][0])) for a, b in zip(starts, ends)]

    def sent_tokenize(self, text: str) -> list[str]:
        if not self._spacy_sentences:
            return self.inner.sent_tokenize(text)
        return [s for s in (text[a:b].strip() for a, b in self.span_tokenize(text)) if s]

    # -- how

    def _sentence_starts(self, tokens: list[str]) -> list[int]:
        """spaCy's Sentencizer: a sentence starts at the first token after a sentence
        punctuation mark that is neither punctuation nor such a mark."""
        if not tokens:
            return []
        starts, seen_period = [0], False
        for i, token in enumerate(tokens):
            in_punct_chars = token in self._punct_chars
            if seen_period and not in_punct_chars and not self._is_punct(token):
                starts.append(i)
                seen_period = False
            elif in_punct_chars:
                seen_period = True
        return starts

    def _words_across(self, text: str, known: dict, spans: bool) -> list[str]:
        """word_tokenize where exceptions may cross spaces: chunks one space apart that
        one may join go to spaCy together, the others keep their tokens."""
        out: list[str] = []
        runs = _RUN.findall(text)
        i, n = 0, len(runs)
        while i < n:
            run = runs[i]
            if run[0].isspace():
                i += 1
                continue
            last = i  # the group's last chunk
            while last + 2 < n and runs[last + 1] == " " and known[runs[last]][1] and \
                    self._may_join(runs[last], runs[last + 2], known, spans):
                last += 2
            if last == i:
                out.extend(known[run][0])
            else:
                out.extend(t.text for t in self.nlp.tokenizer("".join(runs[i:last + 1])))
            i = last + 1
        return out

    def _tokens_at(self, text: str, known: dict, spans: bool,
                   join: bool = True) -> list[tuple[str, int]]:
        """spaCy's tokens of text with their offsets, whitespace tokens included (one
        space after a token belongs to it, any other whitespace run is a token). With
        `join`, chunks one space apart that an exception may join go to spaCy together;
        without, every chunk keeps its own tokens (no exception may cross a space)."""
        out: list[tuple[str, int]] = []
        runs = _RUN.findall(text)
        at, i, n = 0, 0, len(runs)
        while i < n:
            run = runs[i]
            if run[0].isspace():
                skip = 1 if at and run[0] == " " else 0
                if len(run) > skip:
                    out.append((run[skip:], at + skip))
                at += len(run)
                i += 1
                continue
            last = i  # the group's last chunk
            while join and last + 2 < n and runs[last + 1] == " " and \
                    self._may_join(runs[last], runs[last + 2], known, spans):
                last += 2
            if last == i:
                pos = at
                for token in known[run][0]:
                    out.append((token, pos))
                    pos += len(token)
            else:
                group = "".join(runs[i:last + 1])
                out += [(t.text, at + t.idx) for t in self.nlp.tokenizer(group)]
            at += sum(len(r) for r in runs[i:last + 1])
            i = last + 1
        return out

    def _known(self, chunks: list[str]) -> dict:
        """The chunk table, holding every chunk of `chunks`. It keeps two generations:
        when the young one is full it becomes the old one (the older is dropped), and a
        chunk found in the old one moves back, so the chunks in use stay and memory stays
        bounded."""
        if len(self._chunks) > CACHE_LIMIT:
            self._old, self._chunks = self._chunks, {}
            self._shaped.clear()
        young, old = self._chunks, self._old
        missing = [c for c in dict.fromkeys(chunks) if c not in young]
        if missing:
            new = []
            for chunk in missing:
                entry = old.get(chunk)
                if entry is None:
                    new.append(chunk)
                else:
                    young[chunk] = entry
            if new:
                self._learn(new)
        return young

    def _learn(self, chunks: list[str]) -> None:
        """Tokenize new chunks: a chunk no rule of spaCy's splits is one token; the
        others go to spaCy in one call, a newline between them (a token of its own,
        which keeps spaCy's exception pass from matching across them)."""
        split = []
        for chunk in chunks:
            if self._unsplittable(chunk):
                self._remember(chunk, [chunk])
            else:
                split.append(chunk)
        if split:
            self._learn_with_spacy(split)

    def _unsplittable(self, chunk: str) -> bool:
        """Whether spaCy's tokenizer leaves the chunk whole (its _split_affixes and
        _attach_tokens, in short): no exception, prefix or suffix applies, and no infix
        matches (or token_match / url_match keeps it whole)."""
        tok = self.nlp.tokenizer
        if chunk in self._exception_keys:
            return False
        for search in (tok.prefix_search, tok.suffix_search):
            match = search(chunk) if search is not None else None
            if match is not None and match.end() > match.start():
                return False
        if (tok.token_match and tok.token_match(chunk)) or (tok.url_match and tok.url_match(chunk)):
            return True
        return tok.infix_finditer is None or next(tok.infix_finditer(chunk), None) is None

    def _learn_with_spacy(self, chunks: list[str]) -> None:
        starts, at = [], 0
        for chunk in chunks:
            starts.append(at)
            at += len(chunk) + 1
        tokens: list[list[str]] = [[] for _ in chunks]
        which = 0
        for token in self.nlp.tokenizer("\n".join(chunks)):
            while which + 1 < len(starts) and token.idx >= starts[which + 1]:
                which += 1
            if not token.is_space:
                tokens[which].append(token.text)
        for chunk, found in zip(chunks, tokens):
            self._remember(chunk, found)

    def _remember(self, chunk: str, tokens: list[str]) -> None:
        """A chunk's tokens, the texts after a pattern's cut that may follow it (from
        the pattern texts it ends with), and whether it starts like such a text."""
        ends = range(1, min(len(chunk), self._longest) + 1)
        follow = tuple(r for k in ends for r in self._splits.get(chunk[-k:], ()))
        self._chunks[chunk] = (tuple(tokens), follow, any(chunk[:k] in self._rights for k in ends))

    def _exception_may_cross(self, chunks: list[str], known: dict, spans: bool) -> bool:
        return any(self._may_join(left, right, known, spans)
                   for left, right in zip(chunks, chunks[1:]) if known[left][1] and known[right][2])

    def _may_join(self, left: str, right: str, known: dict, spans: bool) -> bool:
        """Whether spaCy's exception pass may match across the space between chunks
        `left` and `right` and change a token: some pattern's text, cut between two of
        its tokens, ends `left` and starts `right` (a match needs that), and either the
        text holds an exception with a space in it (a match that merges), or a chunk's
        own tokens came from an exception that such a match could hide."""
        follow = known[left][1]
        if not (follow and known[right][2] and right.startswith(follow)):
            return False
        return spans or self._excepted(left, known) or self._excepted(right, known)

    def _excepted(self, chunk: str, known: dict) -> bool:
        """Whether an exception shaped the chunk's tokens: they differ from those of
        the affix rules alone (remembered per chunk)."""
        excepted = self._shaped.get(chunk)
        if excepted is None:
            plain = tuple(t.text for t in self._affixes_only(chunk))
            excepted = self._shaped[chunk] = plain != known[chunk][0]
        return excepted

    def _holds_spanning_exception(self, text: str) -> bool:
        return self._spanning is not None and self._spanning.search(text) is not None

    def _is_punct(self, token: str) -> bool:
        punct = self._punct.get(token)
        if punct is None:
            if len(self._punct) > CACHE_LIMIT:
                self._punct.clear()
            punct = self._punct[token] = self.nlp.vocab[token].is_punct
        return punct


def _affixes_only(nlp):
    """A tokenizer with nlp's affix rules and no exceptions: what spaCy's exception
    pass matches against."""
    from spacy.tokenizer import Tokenizer

    tok = nlp.tokenizer
    return Tokenizer(nlp.vocab, rules={}, prefix_search=tok.prefix_search,
                     suffix_search=tok.suffix_search, infix_finditer=tok.infix_finditer,
                     token_match=tok.token_match, url_match=tok.url_match)


def _exception_splits(nlp, affixes_only) -> dict[str, tuple[str, ...]]:
    """Where spaCy's exception pass could match across a space: for every exception
    whose pattern (the exception split by the affix rules alone) has two tokens or
    more, and every cut between two of them, the text before the cut -> the texts
    after it."""
    splits: dict[str, set] = {}
    for key in nlp.tokenizer.rules or {}:
        pattern = [t.text for t in affixes_only(key) if not t.is_space]
        for cut in range(1, len(pattern)):
            splits.setdefault("".join(pattern[:cut]), set()).add("".join(pattern[cut:]))
    return {left: tuple(sorted(rights)) for left, rights in splits.items()}
