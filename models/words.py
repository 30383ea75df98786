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
overlaps (`Tattoo'' ''Executive`). Where two chunks one space apart end and start with
tokens that follow each other in an exception's pattern, they go to spaCy together.
And the sentencizer sees whitespace tokens (a whitespace run other than one space).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from datatrove.utils.word_tokenizers import (SpaCyTokenizer, WhitespaceTokenizer, WordTokenizer,
                                             load_word_tokenizer)

log = logging.getLogger(__name__)

CACHE_LIMIT = 300_000  # chunks remembered per language (some tens of MB)
_CHUNK = re.compile(r"\S+")
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
        # chunk -> (its tokens, may its end join an exception, may its start join one)
        self._chunks: dict[str, tuple[tuple[str, ...], bool, bool]] = {}
        self._punct: dict[str, bool] = {}
        self._pairs, self._ends_as, self._starts_as = _exception_pairs(self.nlp)
        self._lefts = {a for a, _ in self._pairs}
        self._rights = {b for _, b in self._pairs}
        self._punct_chars = self.nlp.get_pipe("sentencizer").punct_chars

    # -- datatrove's WordTokenizer interface

    def word_tokenize(self, text: str) -> list[str]:
        chunks = text.split()
        known = self._known(chunks)
        if self._exception_may_cross(chunks, known):
            return [t for t, _ in self._tokens_at(text, known) if not t.isspace()]
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
        if self._exception_may_cross(chunks, known):
            tokens = self._tokens_at(text, known)
        else:
            tokens = self._tokens_at_chunkwise(text, known)
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

    def _tokens_at_chunkwise(self, text: str, known: dict) -> list[tuple[str, int]]:
        """spaCy's tokens of text with their offsets, whitespace tokens included (one
        space after a token belongs to it, any other whitespace run is a token), where
        no exception may cross a space."""
        out: list[tuple[str, int]] = []
        at = 0
        for run in _RUN.findall(text):
            if run[0].isspace():
                skip = 1 if at and run[0] == " " else 0
                if len(run) > skip:
                    out.append((run[skip:], at + skip))
            else:
                pos = at
                for token in known[run][0]:
                    out.append((token, pos))
                    pos += len(token)
            at += len(run)
        return out

    def _tokens_at(self, text: str, known: dict) -> list[tuple[str, int]]:
        """_tokens_at_chunkwise where exceptions may cross spaces: chunks one space
        apart that one may join go to spaCy together."""
        out: list[tuple[str, int]] = []
        group: list[str] = []  # chunks one space apart that an exception may join
        group_at = 0
        for match in _RUN.finditer(text):
            run, at = match.group(), match.start()
            if run.isspace():
                if run == " " and group:
                    continue  # the group may go on with the next chunk
                out += self._group_tokens(group, group_at, known)
                group = []
                skip = 1 if at > 0 and run[0] == " " else 0
                if run[skip:]:
                    out.append((run[skip:], at + skip))
            elif group and self._may_join(group[-1], run, known):
                group.append(run)
            else:
                out += self._group_tokens(group, group_at, known)
                group, group_at = [run], at
        return out + self._group_tokens(group, group_at, known)

    def _group_tokens(self, group: list[str], at: int, known: dict) -> list[tuple[str, int]]:
        if not group:
            return []
        if len(group) > 1:
            return [(t.text, at + t.idx) for t in self.nlp.tokenizer(" ".join(group))]
        out = []
        for token in known[group[0]][0]:
            out.append((token, at))
            at += len(token)
        return out

    def _known(self, chunks: list[str]) -> dict:
        missing = [c for c in dict.fromkeys(chunks) if c not in self._chunks]
        if missing and len(self._chunks) + len(missing) > CACHE_LIMIT:
            self._chunks.clear()  # start afresh: this text's chunks are all learned again
            missing = list(dict.fromkeys(chunks))
        if missing:
            self._learn(missing)
        return self._chunks

    def _learn(self, chunks: list[str]) -> None:
        """Tokenize new chunks in one spaCy call. A newline between them is a token of
        its own, which keeps spaCy's exception pass from matching across them."""
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
            last, first = found[-1], found[0]
            self._chunks[chunk] = (
                tuple(found),
                any(a in self._lefts for a in self._ends_as.get(last, (last,))),
                any(b in self._rights for b in self._starts_as.get(first, (first,))))

    def _exception_may_cross(self, chunks: list[str], known: dict) -> bool:
        return any(self._may_join(left, right, known) for left, right in zip(chunks, chunks[1:])
                   if known[left][1] and known[right][2])

    def _may_join(self, left: str, right: str, known: dict) -> bool:
        """Whether an exception's pattern may run from chunk `left` into `right`."""
        if not (known[left][1] and known[right][2]):
            return False
        last, first = known[left][0][-1], known[right][0][0]
        return any((a, b) in self._pairs for a in self._ends_as.get(last, (last,))
                   for b in self._starts_as.get(first, (first,)))

    def _is_punct(self, token: str) -> bool:
        punct = self._punct.get(token)
        if punct is None:
            punct = self._punct[token] = self.nlp.vocab[token].is_punct
        return punct


def _exception_pairs(nlp) -> tuple[set, dict, dict]:
    """The token pairs that follow each other in some exception's pattern (what spaCy's
    matcher looks for: the exception split by the affix rules alone), and, for a token
    an exception produces at its end or start, the pattern token it stood for there."""
    from spacy.attrs import ORTH
    from spacy.tokenizer import Tokenizer

    tok = nlp.tokenizer
    affixes_only = Tokenizer(nlp.vocab, rules={}, prefix_search=tok.prefix_search,
                             suffix_search=tok.suffix_search, infix_finditer=tok.infix_finditer,
                             token_match=tok.token_match, url_match=tok.url_match)
    pairs: set = set()
    ends_as: dict = {}
    starts_as: dict = {}
    for key, pieces in (tok.rules or {}).items():
        pattern = [t.text for t in affixes_only(key)]
        if not pattern:
            continue
        pairs.update(zip(pattern, pattern[1:]))
        last, first = (p.get(ORTH, p.get("ORTH")) for p in (pieces[-1], pieces[0]))
        ends_as[last] = (*ends_as.get(last, (last,)), pattern[-1])
        starts_as[first] = (*starts_as.get(first, (first,)), pattern[0])
    return pairs, ends_as, starts_as
