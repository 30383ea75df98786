"""The pii stage: datatrove's PIIFormatter does the replacing, document by document;
the counts are what it replaced; phone numbers only when asked, and only valid ones."""

import pyarrow as pa
import pytest
from datatrove.pipeline.formatters import PIIFormatter

from thresher.pipeline.engine.config import ConfigError, load_config, parse_config
from thresher.stages.pii import PIIRedaction
from thresher.stages.testing import assert_stage_contract

TEXTS = [
    "Write to jane.doe@mail.example.net or bob@uni.example.edu; the server is 8.8.8.8.",
    "The router answers on 192.168.1.1 and 10.0.0.7, private both.",
    "Call +1 650-253-0000 or (212) 555-0123 tomorrow, or 12345.",
    "Nothing to hide here.",
    "",
]


def table(texts):
    return pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": texts,
                     "source_row": list(range(len(texts)))})


def test_emails_and_public_ips_are_replaced_as_datatrove_does_per_document():
    out = assert_stage_contract(PIIRedaction(), table(TEXTS))
    for text, redacted in zip(TEXTS, out.column("text").to_pylist()):
        assert redacted == PIIFormatter().format(text)  # a fresh formatter per document
    assert out.column("text").to_pylist()[0] == (
        "Write to email@example.com or firstname.lastname@example.org; the server is "
        "22.214.171.124.")
    assert out.column("pii_emails").to_pylist() == [2, 0, 0, 0, 0]
    assert out.column("pii_ips").to_pylist() == [1, 0, 0, 0, 0]  # private ones stay
    assert out.column("pii_phones").to_pylist() == [0, 0, 0, 0, 0]
    assert out.column("text").to_pylist()[1:] == TEXTS[1:]


def test_a_documents_replacements_do_not_depend_on_its_batch():
    stage = PIIRedaction().ready()
    alone = stage(table(TEXTS[:1])).column("text").to_pylist()
    after = stage(table(TEXTS)).column("text").to_pylist()[0]
    assert alone == [after]


def test_phone_numbers_only_when_asked_and_only_valid_ones():
    out = assert_stage_contract(PIIRedaction(emails=False, ips=False, phones=True),
                                table(TEXTS[2:3]))
    assert out.column("text").to_pylist() == [
        "Call 555-0100 or 555-0100 tomorrow, or 12345."]
    assert out.column("pii_phones").to_pylist() == [2]


@pytest.mark.parametrize("params, message", [
    ({"emails": False, "ips": False}, "nothing to redact"),
    ({"phones": True, "phone_region": "XX"}, "not a region libphonenumber knows"),
])
def test_bad_settings_are_config_errors(params, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"stages": [{"stage": "pii", **params}]}, "c.yaml")


def test_pii_is_in_the_default_pipeline_on_kept_documents_before_wrap():
    specs = {s.name: s for s in load_config().stages}
    names = list(specs)
    assert names.index("pii") == names.index("wrap") - 1
    assert specs["pii"].build().kept_only and specs["pii"].build().rewrites_text


def test_a_seeded_sample_of_the_demo_crawl_equals_datatroves_output():
    """5,000 demo documents (every shard, rows chosen by a seed): the stage's text is
    PIIFormatter's on each, and its counts add up to what changed."""
    import random
    from pathlib import Path

    import pyarrow.parquet as pq

    crawl = Path(__file__).resolve().parents[2] / "data" / "demo-crawl"
    rows = [r for path in sorted(crawl.glob("*.parquet"))
            for r in pq.read_table(path, columns=["id", "text"]).to_pylist()]
    sample = random.Random(5).sample(rows, 5000)
    out = PIIRedaction()(pa.Table.from_pylist(sample)).to_pylist()
    changed = 0
    for before, after in zip(sample, out):
        assert after["text"] == PIIFormatter().format(before["text"]), before["id"]
        changed += after["text"] != before["text"]
        assert (after["text"] != before["text"]) == bool(after["pii_emails"] or after["pii_ips"])
    assert changed > 0  # the handbook and the Python docs hold addresses
