"""Paragraph dedup follows cc_net line for line. The pinned values below were produced
by cc_net's own code (cc_net/dedup.py: compute_hashes, HashesCollector then
DuplicatesRemover over the group, as mine.py runs them; text_normalizer.py), fetched
from facebookresearch/cc_net; bench/lines_throughput.py runs that code on the whole
demo crawl."""

import numpy as np
import pyarrow as pa
import pytest

from thresher.models.bloom import BloomShape
from thresher.models.line_hash import line_hashes, normalize_for_dedup
from thresher.stages.lines import Lines
from thresher.stages.testing import assert_stage_contract

GROUP = [
    "Home | About | Contact\nThe river rises in the hills.\nIt flows 120 km to the sea.\n"
    "Home | About | Contact\nCookies help us deliver our services.",
    "HOME | ABOUT | CONTACT\nThe bridge was built in 1931.\n"
    "Cookies help us deliver our services.\nThe bridge was built in 1931.",
    "Cookies help us deliver our services.\n  home | about | contact  ",
    "A line only here.\n\nAnother line only here.\n\n",
    "It flows 999 km to the sea.\nThe river rises in the hills!",
    "\u201cQuoted\u201d words here\nQuoted words here\u2026\nQuoted words here",
]
# cc_net's output for GROUP as one group (None: the document was dropped)
CC_NET = ["The river rises in the hills.", "The bridge was built in 1931.", None,
          "A line only here.\n\nAnother line only here.", "The river rises in the hills!",
          "\u201cQuoted\u201d words here"]


def test_hashes_are_cc_nets():
    assert line_hashes("Hello\nWorld 12\n\n  HELLO  ").tolist() == [
        11738849977924252842, 5254340864218447047, 957977401221134810, 11738849977924252842]


@pytest.mark.parametrize("line, normalized", [
    ("  \u00c7a, l'\u00e9t\u00e9 \u2014 \u00abna\u00efve\u00bb 12\u2026\t",
     "\u00e7a, l'\u00e9t\u00e9  na\u00efve 00"),
    ("A\x01B\x7fC\x9fD", "abcd"),
    ("\uff21\uff22\uff11\uff12\uff13\uff01", "\uff41\uff42000"),
])
def test_normalization_is_cc_nets(line, normalized):
    assert normalize_for_dedup(line) == normalized
    assert line_hashes(line).tolist() == line_hashes(normalized).tolist()


def table(texts, shard=None):
    rows = {"id": [f"d{i}" for i in range(len(texts))], "text": texts}
    if shard:
        rows["source_shard"] = [shard] * len(texts)
    return pa.table(rows)


def test_a_group_is_deduplicated_as_cc_net_does_it():
    out = assert_stage_contract(Lines(), table(GROUP, shard="s.parquet")).to_pylist()
    assert [r["text"] if r["lines_kept"] else None for r in out] == CC_NET
    dropped = out[2]
    assert dropped["text"] == GROUP[2]  # nothing left: the text stays, for the rejected output
    assert (dropped["lines_kept"], dropped["lines_removed_lines"]) == (0, 2)
    assert (out[0]["lines_kept"], out[0]["lines_removed_lines"]) == (1, 4)
    assert out[0]["lines_removed_chars"] == len(GROUP[0]) - len(CC_NET[0])
    assert out[3]["lines_removed_lines"] == 2  # two repeats of the empty line within the document
    assert {r["lines_seen_before"] for r in out} == {0}


def test_the_empty_document_keeps_nothing():
    out = Lines()(table(["", "x"])).to_pylist()
    assert (out[0]["lines_kept"], out[0]["lines_removed_lines"]) == (0, 0)
    assert (out[1]["text"], out[1]["lines_kept"]) == ("x", 1)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="scope"):
        Lines(scope="crawl")
    with pytest.raises(ValueError, match="group_shards"):
        Lines(group_shards=0)
    with pytest.raises(ValueError, match="fp_rate"):
        Lines(scope="all", fp_rate=1.5)


def test_the_bloom_filter_is_sized_as_usual():
    shape = BloomShape.sized(1_000_000, 0.01)
    assert (shape.parts, shape.part_bits, shape.probes) == (1, 9585088, 7)
    big = BloomShape.sized(1_000_000_000, 0.001)
    assert big.parts == 108 and big.part_bits <= 1 << 27 and big.probes == 10


def test_the_bloom_filters_false_positive_rate_is_its_target():
    shape = BloomShape.sized(200_000, 0.01)
    rng = np.random.default_rng(7)
    items = rng.integers(0, 2 ** 63, 200_000, dtype=np.uint64) * np.uint64(2)
    held_out = items[:100_000] + np.uint64(1)  # odd: never added
    part = shape.empty_part()
    shape.add(part, items)
    assert shape.contains(part, items).all()
    rate = shape.contains(part, held_out).mean()
    assert abs(rate - 0.01) / 0.01 < 0.2, rate


def test_the_report_chart_bins_each_documents_share_of_lines_removed():
    out = Lines()(table(GROUP))
    chart, = Lines().charts(out, out.slice(0, 0), {})
    # every document lost lines: document 3 two of five (25-50%), document 2 all
    assert chart.labels == ["none", "<10%", "10-25%", "25-50%", "50-99%", "all"]
    assert chart.series["curated"] == [0, 0, 0, 1, 4, 1]
    empty = Lines().charts(out.slice(0, 0), out.slice(0, 0), {})[0]
    assert empty.why_not
