"""thresher's CCNet perplexity follows cc_net exactly; datatrove's KenlmModel agrees
on text without digits and differs, in a known way, on text with digits."""

import re

import kenlm
import pytest

from bench.peers import datatrove_kenlm as datatrove_model
from thresher.models.kenlm_lm import CCNetLM, WordLM
from thresher.models.normalize import normalize

NO_DIGITS = [
    "The city is the capital of the province and lies on the river.",
    "Anarchism is a political philosophy that advocates self-governed societies.\n"
    "It holds the state to be undesirable.",
    "  Ça et là, l'été — «naïve» résumé…  ",
    "",
    "!!! ??? ...",
]
WITH_DIGITS = ["In 1936 the population was 12,345 and grew 3.5 percent by 2024.",
               "Call 555 0199 before 9 pm."]


def test_perplexity_is_cc_nets_formula(tiny_lm_dir):
    model = CCNetLM(tiny_lm_dir / "en.arpa.bin", tiny_lm_dir / "en.sp.model")
    lm = kenlm.Model(str(tiny_lm_dir / "en.arpa.bin"))
    for text, ppl in zip(NO_DIGITS + WITH_DIGITS, model.perplexities(NO_DIGITS + WITH_DIGITS)):
        pieces = model.sp.Encode(normalize(text), out_type=str)
        # Independent sum over KenLM's per-token scores, </s> included.
        log10 = sum(score for score, _, _ in lm.full_scores(" ".join(pieces)))
        assert ppl == round(10 ** (-log10 / (len(pieces) + 1)), 1)


def test_datatrove_agrees_on_text_without_digits(tiny_lm_dir):
    ours = CCNetLM(tiny_lm_dir / "en.arpa.bin", tiny_lm_dir / "en.sp.model").perplexities(NO_DIGITS)
    peer = datatrove_model(tiny_lm_dir, "en")
    assert ours == [peer.get_perplexity(t) for t in NO_DIGITS]


def test_datatrove_collapses_digit_runs_where_cc_net_maps_each_digit(tiny_lm_dir):
    model = CCNetLM(tiny_lm_dir / "en.arpa.bin", tiny_lm_dir / "en.sp.model")
    peer = datatrove_model(tiny_lm_dir, "en")
    ours = model.perplexities(WITH_DIGITS)
    theirs = [peer.get_perplexity(t) for t in WITH_DIGITS]
    assert ours != theirs
    assert normalize(WITH_DIGITS[0]).startswith("in 0000 the population was 00,000")
    # datatrove's result is cc_net's on the text with each digit run, and an optional
    # decimal part after one of . , ، ٫ ⎖ ⎗ ⎘ (so "12,345" too), replaced by one 0.
    collapsed = [re.sub(r"\d+([.,،٫⎖⎗⎘]\d+)?", "0", t) for t in WITH_DIGITS]
    assert theirs == model.perplexities(collapsed)


def test_word_lm_is_oscars_whole_document_score(tiny_lm_dir):
    lm = kenlm.Model(str(tiny_lm_dir / "en.arpa.bin"))
    text = "first line\nsecond  line"
    assert WordLM(tiny_lm_dir / "en.arpa.bin").perplexities([text]) == [
        pytest.approx(lm.perplexity("first line second  line"))]


def test_corrupt_or_wrong_model_files_fail_at_load(tmp_path, tiny_lm_dir):
    bad = tmp_path / "xx.arpa.bin"
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match="not a KenLM"):
        WordLM(bad)
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        CCNetLM(tiny_lm_dir / "en.arpa.bin", bad)
    with pytest.raises(FileNotFoundError):
        WordLM(tmp_path / "missing.arpa.bin")


def test_perplexity_after_lines_is_cc_nets_on_cc_nets_deduplicated_text(tiny_lm_dir):
    """cc_net scores what its paragraph dedup left; so does the ccnet stage after lines.
    CC_NET is cc_net's own dedup output for GROUP (see tests/stages/test_lines.py)."""
    import pyarrow as pa

    from test_lines import CC_NET, GROUP
    from thresher.stages.ccnet import CCNetPerplexity
    from thresher.stages.lines import Lines

    batch = pa.table({"id": [str(i) for i in range(len(GROUP))], "text": GROUP,
                      "lang": ["en"] * len(GROUP)})
    deduplicated = Lines()(batch)
    kept = deduplicated.filter(pa.compute.greater(deduplicated.column("lines_kept"), 0))
    scored = CCNetPerplexity(lm_dir=str(tiny_lm_dir), cutoffs={"en": (10.0, 1e9)}).ready()(kept)
    lm = kenlm.Model(str(tiny_lm_dir / "en.arpa.bin"))
    sp = CCNetLM(tiny_lm_dir / "en.arpa.bin", tiny_lm_dir / "en.sp.model").sp
    expected = []
    for text in (t for t in CC_NET if t is not None):
        # cc_net's MultiSentencePiece normalizes the whole document (newlines deleted),
        # then DocLM scores it as one line, </s> included
        pieces = sp.Encode(normalize(text), out_type=str)
        log10 = sum(score for score, _, _ in lm.full_scores(" ".join(pieces)))
        expected.append(round(10 ** (-log10 / (len(pieces) + 1)), 1))
    assert scored.column("text").to_pylist() == [t for t in CC_NET if t is not None]
    column = scored.column("ccnet_ppl")
    assert column.to_pylist() == pa.array(expected, column.type).to_pylist()
