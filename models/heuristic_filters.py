"""datatrove's four heuristic filters, decided faster and the same way.

Each function takes the datatrove filter object (for its parameters, so that defaults
and meanings are datatrove's own), the text, and a `Words` that splits the text once
for every filter. It returns datatrove's reason for dropping the text, or None where
datatrove's filter keeps it. The checks run in datatrove's order with datatrove's
arithmetic; what changes is only how: words are split once per document, per-word
facts are remembered, n-grams are counted as tuples or sliced from one string, and C4
stops counting sentences once the minimum is reached (the count only meets a bound).
`tests/test_heuristics.py` and `bench/heuristics_throughput.py` hold them to datatrove.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import accumulate

from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, ELLIPSIS, END_PUNCTUATION, \
    POLICY_SUBSTRINGS
from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates
from datatrove.utils.text import PUNCTUATION_SET, split_into_sentences

_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile("\n+")
# word -> (has a character that is not punctuation, has a letter)
_WORD_FACTS: dict[str, tuple[bool, bool]] = {}
_FACTS_LIMIT = 500_000


class Words:
    """A text's words, split by the tokenizer datatrove would use, at most once."""

    def __init__(self, text: str, tokenizer):
        self.text, self.tokenizer = text, tokenizer
        self._words: list[str] | None = None

    @property
    def words(self) -> list[str]:
        if self._words is None:
            self._words = self.tokenizer.word_tokenize(self.text)
        return self._words


def _facts(word: str) -> tuple[bool, bool]:
    facts = _WORD_FACTS.get(word)
    if facts is None:
        if len(_WORD_FACTS) > _FACTS_LIMIT:
            _WORD_FACTS.clear()
        facts = _WORD_FACTS[word] = (any(c not in PUNCTUATION_SET for c in word),
                                     any(c.isalpha() for c in word))
    return facts


def gopher_quality(f, text: str, split: Words) -> str | None:
    """GopherQualityFilter.filter."""
    words = split.words
    n_words = len(words)
    facts = [_facts(w) for w in words]
    kept_lengths = [len(w) for w, (not_symbol, _) in zip(words, facts) if not_symbol]
    n_kept = len(kept_lengths)
    if f.min_doc_words and n_kept < f.min_doc_words:
        return "gopher_short_doc"
    if f.max_doc_words and n_kept > f.max_doc_words:
        return "gopher_long_doc"
    mean = sum(kept_lengths) / n_kept if n_kept else float("nan")
    if f.min_avg_word_length and mean < f.min_avg_word_length:
        return "gopher_below_avg_threshold"
    if f.max_avg_word_length and mean > f.max_avg_word_length:
        return "gopher_above_avg_threshold"
    if f.max_symbol_word_ratio and text.count("#") / n_words > f.max_symbol_word_ratio:
        return "gopher_too_many_hashes"
    if f.max_symbol_word_ratio and \
            (text.count("...") + text.count("…")) / n_words > f.max_symbol_word_ratio:
        return "gopher_too_many_ellipsis"
    lines = text.splitlines()
    if f.max_bullet_lines_ratio:
        bullets = sum(s.lstrip().startswith(("•", "-")) for s in lines)
        if bullets / len(lines) > f.max_bullet_lines_ratio:
            return "gopher_too_many_bullets"
    if f.max_ellipsis_lines_ratio:
        ellipses = sum(s.rstrip().endswith(("...", "…")) for s in lines)
        if ellipses / len(lines) > f.max_ellipsis_lines_ratio:
            return "gopher_too_many_end_ellipsis"
    if f.max_non_alpha_words_ratio and \
            sum(alpha for _, alpha in facts) / n_words < f.max_non_alpha_words_ratio:
        return "gopher_below_alpha_threshold"
    if f.min_stop_words and len(f.stop_words.intersection(words)) < f.min_stop_words:
        return "gopher_enough_stop_words"
    return None


def gopher_repetition(f, text: str, split: Words) -> str | None:
    """GopherRepetitionFilter.filter."""
    if not text:
        return "empty"
    paragraphs = _PARAGRAPHS.split(text.strip())
    duplicates, chars = find_duplicates(paragraphs)
    if f.dup_para_frac and duplicates / len(paragraphs) > f.dup_para_frac:
        return "dup_para_frac"
    if f.dup_para_char_frac and chars / len(text) > f.dup_para_char_frac:
        return "dup_para_char_frac"
    lines = _LINES.split(text)
    duplicates, chars = find_duplicates(lines)
    if f.dup_line_frac and duplicates / len(lines) > f.dup_line_frac:
        return "dup_line_frac"
    if f.dup_line_char_frac and chars / len(text) > f.dup_line_char_frac:
        return "dup_line_char_frac"
    words = split.words
    for n, frac in f.top_n_grams:
        if len(words) >= n and _top_ngram_chars(words, n) / len(text) > frac:
            return f"top_{n}_gram"
    if f.dup_n_grams:
        joined = "".join(words)
        ends = [0, *accumulate(map(len, words))]
        for n, frac in f.dup_n_grams:
            if _repeated_ngram_chars(joined, ends, n, len(text), frac) / len(text) > frac:
                return f"duplicated_{n}_n_grams"
    return None


def _top_ngram_chars(words: list[str], n: int) -> int:
    """Characters of the most frequent n-gram (words joined by spaces) times its count;
    ties go to the n-gram seen first, as Counter.most_common does. Tuples stand for the
    joined strings, which is the same where no word holds a space."""
    if any(" " in w for w in words):
        grams = Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
        top, count = grams.most_common(1)[0]
        return len(top) * count
    grams = Counter(zip(*(words[i:] for i in range(n))))
    top, count = grams.most_common(1)[0]
    return (sum(map(len, top)) + n - 1) * count


def _repeated_ngram_chars(joined: str, ends: list[int], n: int, length: int, frac: float) -> int:
    """datatrove's find_all_duplicate: walking the n-grams (words joined with nothing
    between, so `ab c` and `a bc` are the same n-gram), a repeat adds its characters
    and jumps past itself. Each n-gram is a slice of the words joined once; where no
    n-gram repeats there is nothing to walk. The walk stops once count / length
    passes frac (the filter's own test): the count only grows, so the verdict is made."""
    grams = [joined[ends[i]:ends[i + n]] for i in range(len(ends) - n)]
    if len(set(grams)) == len(grams):
        return 0
    seen: set[str] = set()
    repeated, i, last = 0, 0, len(grams) - 1
    while i <= last:
        gram = grams[i]
        if gram in seen:
            repeated += len(gram)
            if repeated / length > frac:
                return repeated
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


def c4(f, text: str, split: Words, kept: list | None = None) -> str | None:
    """C4QualityFilter.filter's verdict; with `kept` (a list), the lines it keeps are
    appended to it (the text it writes is `c4_text(f, kept)`)."""
    lines = text.splitlines() if f.split_paragraph else \
        split_into_sentences(text, split.tokenizer)
    sentences = 0
    count = f.min_num_sentences != -1
    for line in lines:
        line = line.strip()
        words = line.split()
        if f.max_word_length != -1 and any(len(w) > f.max_word_length for w in words):
            continue
        if f.remove_citations:
            line = CITATION_REGEX.sub("", line)
        if f.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION)
                                           or line.endswith(ELLIPSIS)):
            continue
        if len(words) < f.min_words_per_line:
            continue
        lower = line.lower()
        if f.filter_lorem_ipsum and "lorem ipsum" in lower:
            return "lorem_ipsum"
        if f.filter_javascript and "javascript" in lower:
            continue
        if f.filter_curly_bracket and "{" in line:
            return "curly_bracket"
        if f.filter_policy and any(p in lower for p in POLICY_SUBSTRINGS):
            continue
        if count and sentences < f.min_num_sentences:  # past the minimum: no need to count
            sentences += _sentences(split.tokenizer, line) if f.split_paragraph else 1
        if kept is not None:
            kept.append(line)
    if sentences < f.min_num_sentences:
        return "too_few_sentences"
    return None


def c4_text(f, kept: list[str]) -> str:
    """The text C4QualityFilter leaves in a document it keeps: its kept lines (each
    stripped, citations removed) joined by line breaks, or by spaces when it split
    sentences."""
    return ("\n" if f.split_paragraph else " ").join(kept).strip()


def _sentences(tokenizer, text: str) -> int:
    """len(datatrove's split_into_sentences(text))."""
    return max(1, len(tokenizer.span_tokenize(text)))


def fineweb(f, text: str, split: Words) -> str | None:
    """FineWebQualityFilter.filter."""
    lines = [line for line in text.split("\n") if line.strip() != ""]
    if not lines:
        return "empty"
    ratio = sum(1 for line in lines if line.endswith(f.stop_chars)) / len(lines)
    if ratio < f.line_punct_thr and not (ratio == 0 and f.line_punct_exclude_zero):
        return "line_punct_ratio"
    ratio = sum(1 for line in lines if len(line) <= f.short_line_length) / len(lines)
    if ratio > f.short_line_threshold:
        return "short_line_ratio"
    if find_duplicates(lines)[1] / len(text.replace("\n", "")) > f.char_duplicates_ratio:
        return "char_dup_ratio"
    if text.count("\n") / len(split.words) > f.new_line_ratio:
        return "list_ratio"
    return None


JUDGES = {"gopher_quality": gopher_quality, "gopher_repetition": gopher_repetition,
          "c4": c4, "fineweb": fineweb}
