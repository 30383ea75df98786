import pyarrow as pa
import pytest

from thresher.stages.ccnet import bucket, estimate_cutoffs, read_cutoff_csv, write_cutoff_csv


@pytest.mark.parametrize("ppl, expected", [
    (100.0, "head"), (339.9, "head"), (340.0, "middle"), (519.9, "middle"),
    (520.0, "tail"), (5000.0, "tail"), (None, "all"), (-1.0, "all"),
])
def test_bucket_edges_follow_cc_net(ppl, expected):
    assert bucket(ppl, (340.0, 520.0)) == expected  # cc_net's English cut-offs


def test_no_cutoffs_means_all():
    assert bucket(100.0, None) == "all"


def test_estimate_cutoffs_per_language_from_a_sample():
    sample = pa.table({"lang": ["en"] * 100 + ["de"] * 5,
                       "ccnet_ppl": [float(i) for i in range(1, 101)] + [1.0] * 5})
    cutoffs = estimate_cutoffs(sample, 30, 60)
    assert cutoffs == {"en": pytest.approx((30.7, 60.4))}  # numpy's linear percentiles
    assert "de" not in cutoffs  # too few documents to estimate


def test_cutoff_csv_round_trip_in_cc_net_layout(tmp_path):
    path = tmp_path / "cutoff.csv"
    path.write_text(",de,en\n30,280.5,340.0\n60,430.0,520.0\n90,900.0,1000.0\n")
    assert read_cutoff_csv(path, 30, 60) == {"de": (280.5, 430.0), "en": (340.0, 520.0)}
    write_cutoff_csv(tmp_path / "out.csv", {"en": (1.0, 2.0)}, 30, 60)
    assert read_cutoff_csv(tmp_path / "out.csv", 30, 60) == {"en": (1.0, 2.0)}
    with pytest.raises(ValueError, match="percentile"):
        read_cutoff_csv(path, 25, 60)
