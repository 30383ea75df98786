"""The heuristics stage: datatrove's filters as columns, and the fast word splitter that
must split exactly as datatrove's tokenizers do."""

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter,
                                        GopherQualityFilter, GopherRepetitionFilter)

from thresher.models.words import FastSpacyTokenizer, datatrove_tokenizer, word_tokenizer
from thresher.pipeline.engine.config import ConfigError, parse_config
from thresher.stages.heuristics import FILTERS, HeuristicFilters

PROSE = ("The history of the city begins with a small settlement on the river. Over the "
         "years it grew into a market town, and then into a centre of trade and learning. "
         "Its people built bridges, schools and a library that still stands today. Many "
         "visitors come to see the old walls and to walk along the water. The museum tells "
         "the story of the craftsmen who made the town famous, and of the families that "
         "have lived there for generations.")
# Tokens that spaCy's exception pass treats differently in context: a match across the
# space hides the one inside `''Executive` (see models/words.py).
TRICKY = ["Tattoo'' ''Executive Producer", "B. ''Executive'' y", "EE. UU. y la U.E. hoy",
          "Hi :) there. Next\n\nOne.\n", "  leading spaces", "a.  b", "x. [1] [2]  ",
          "", " ", "\n\nA b. C d.  ", "don't (can't) won't.", "http://example.com/a?b=c. Fin."]


def _datatrove_reason(cls, text, language="en", **params):
    result = cls(language=language, **params).filter(Document(text=text, id="x"))
    return None if result is True else result[1]


def test_each_filter_pins_a_known_verdict():
    stage = HeuristicFilters()
    assert {name: stage.judge(name, PROSE, "en") for name in FILTERS} == dict.fromkeys(FILTERS)
    assert stage.judge("gopher_quality", "Too short to be a page.", "en") == "gopher_short_doc"
    repeated = "\n".join(["Buy cheap watches now at the best price online."] * 10)
    assert stage.judge("gopher_repetition", repeated, "en") == "dup_line_frac"
    assert stage.judge("c4", PROSE + " Write {curly} braces.", "en") == "curly_bracket"
    lists = "\n".join(f"item number {i}" for i in range(20))
    assert stage.judge("fineweb", lists, "en") == "line_punct_ratio"


@pytest.mark.parametrize("text", [PROSE, "Too short.", "\n".join(["same line here"] * 8),
                                  PROSE + "\n" + PROSE, "Lorem ipsum dolor sit amet. " * 9])
def test_verdicts_are_datatroves(text):
    stage = HeuristicFilters(c4={"filter_no_terminal_punct": False})
    classes = {"gopher_quality": GopherQualityFilter, "gopher_repetition": GopherRepetitionFilter,
               "c4": C4QualityFilter, "fineweb": FineWebQualityFilter}
    for name, cls in classes.items():
        params = {"filter_no_terminal_punct": False} if name == "c4" else {}
        assert stage.judge(name, text, "en") == _datatrove_reason(cls, text, **params), name


@pytest.mark.parametrize("language", ["en", "de", "es", "fr"])
def test_fast_tokenizer_splits_as_datatrove_on_tricky_text(language):
    fast, ref = word_tokenizer(language), datatrove_tokenizer(language)
    assert isinstance(fast, FastSpacyTokenizer)
    for text in TRICKY:
        assert fast.word_tokenize(text) == ref.word_tokenize(text), text
        assert fast.span_tokenize(text) == ref.span_tokenize(text), text
        assert fast.sent_tokenize(text) == ref.sent_tokenize(text), text


def test_fast_tokenizer_splits_as_datatrove_on_the_demo_crawl(demo_sample):
    """Every word and sentence span of 600 demo documents (each language the sample has
    a tokenizer for), and the cross-space exception case is among them."""
    texts, langs = demo_sample
    crossed = 0
    for text, lang in zip(texts, langs):
        fast, ref = word_tokenizer(lang), datatrove_tokenizer(lang)
        assert fast.word_tokenize(text) == ref.word_tokenize(text)
        assert fast.span_tokenize(text) == ref.span_tokenize(text)
        if isinstance(fast, FastSpacyTokenizer):
            chunks = text.split()
            crossed += fast._exception_may_cross(chunks, fast._known(chunks),
                                                 fast._holds_spanning_exception(text))
    assert crossed > 0  # the sample exercises the slow path too


def test_stage_columns_match_datatrove_on_the_demo_crawl(demo_sample):
    texts, langs = demo_sample
    table = pa.table({"text": texts, "lang": langs})
    fast = HeuristicFilters(engine="fast")(table)
    slow = HeuristicFilters(engine="datatrove")(table)
    for column in HeuristicFilters.columns:
        assert fast.column(column).equals(slow.column(column)), column
    reasons = set(fast.column("heuristics_gopher_quality_reason").to_pylist())
    assert {None, "gopher_short_doc"} <= reasons  # the sample has both outcomes


@pytest.fixture(scope="module")
def demo_sample():
    """600 demo documents across its sources, with the language lid176 gives them."""
    from thresher.models.langid import FastTextLID
    from thresher.models.registry import resolve
    root = Path(__file__).resolve().parents[2]
    table = ds.dataset(root / "data" / "demo-crawl").to_table(columns=["text"])
    rng = random.Random(7)
    texts = [table.column("text")[i].as_py() for i in rng.sample(range(table.num_rows), 600)]
    langs, _ = FastTextLID(resolve("lid176")).predict(texts)
    return texts, langs


def test_rows_use_their_language_and_fall_back_to_the_stage_language():
    stage = HeuristicFilters(language="de")
    out = stage(pa.table({"text": [PROSE, PROSE], "lang": ["en", None]}))
    assert out.num_rows == 2
    assert ("gopher_quality", "en") in stage._filters and ("gopher_quality", "de") in stage._filters


def test_a_language_without_a_tokenizer_here_uses_datatroves_whitespace_tokenizer():
    from datatrove.utils.word_tokenizers import WhitespaceTokenizer

    assert type(datatrove_tokenizer("no-such-language")) is WhitespaceTokenizer
    fast = word_tokenizer("no-such-language")
    assert fast.word_tokenize("one two, three.") == ["one", "two", ",", "three", "."]


def test_a_disabled_filter_leaves_null_columns():
    out = HeuristicFilters(c4=False)(pa.table({"text": [PROSE]}))
    assert out.column("heuristics_c4").to_pylist() == [None]
    assert out.column("heuristics_c4_reason").to_pylist() == [None]
    assert out.column("heuristics_fineweb").to_pylist() == [True]


def test_bad_parameters_fail_the_config():
    base = {"stages": [{"stage": "heuristics", "gopher_quality": {"min_doc_wordz": 3}}]}
    with pytest.raises(ConfigError, match="min_doc_wordz"):
        parse_config(base, "test")
    with pytest.raises(ConfigError, match="engine must be one of"):
        parse_config({"stages": [{"stage": "heuristics", "engine": "turbo"}]}, "test")
    with pytest.raises(ConfigError, match="language"):
        parse_config({"stages": [{"stage": "heuristics", "c4": {"language": "de"}}]}, "test")


def test_drop_reason_names_the_filter_and_its_reason():
    from thresher.pipeline.engine.rules import Rule
    from thresher.pipeline.engine.write import decide

    table = HeuristicFilters()(pa.table({"text": [PROSE, "Too short."]}))
    nulls = pa.nulls(2, pa.string())
    table = table.append_column("_pre", nulls).append_column("_error", nulls)
    reasons = decide(table, [Rule.parse("heuristics_gopher_quality != false")])
    assert reasons.to_pylist() == [None, "heuristics_gopher_quality=false:gopher_short_doc"]


def test_c4_rewrites_as_fineweb_ran_it_datatroves_four_filters_in_a_row(demo_sample):
    """c4_rewrites: the stage keeps what datatrove's GopherRepetition, GopherQuality,
    C4 (filter_no_terminal_punct off) and FineWeb filters keep when run one after the
    other as FineWeb's pipeline runs them, FineWeb's judging C4's text, and leaves the
    text C4 leaves; the removed lines and characters are counted."""
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

    texts, langs = demo_sample
    english = [t for t, lang in zip(texts, langs) if lang == "en"]
    params = {"c4": {"filter_no_terminal_punct": False}}
    out = {}
    for engine in ("fast", "datatrove"):
        stage = HeuristicFilters(engine=engine, c4_rewrites=True, language_column=None, **params)
        out[engine] = stage(pa.table({"text": english}))
    peers = [GopherRepetitionFilter(), GopherQualityFilter(),
             C4QualityFilter(filter_no_terminal_punct=False), FineWebQualityFilter()]
    expected = []
    for text in english:
        doc = Document(text=text, id="")
        passed = all(peer.filter(doc) is True for peer in peers)
        expected.append(doc.text if passed else None)
    for engine, table in out.items():
        kept = [all(table.column(f"heuristics_{f}")[i].as_py() for f in FILTERS)
                for i in range(table.num_rows)]
        got = [t if k else None for t, k in zip(table.column("text").to_pylist(), kept)]
        assert got == expected, engine
    table = out["fast"]
    assert sum(e is not None for e in expected) > 20
    changed = [i for i, e in enumerate(expected) if e is not None and e != english[i]]
    assert changed  # C4 took lines out of some kept documents
    for i in changed:
        assert table.column("heuristics_removed_chars")[i].as_py() == len(english[i]) - len(expected[i])
    assert HeuristicFilters(c4_rewrites=True).rewrites_text
    assert not HeuristicFilters().rewrites_text
    with pytest.raises(ValueError, match="c4_rewrites needs the c4 filter"):
        HeuristicFilters(c4=False, c4_rewrites=True)
