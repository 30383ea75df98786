"""The run report (OUT/runs/<run_id>/report.html): no empty plot, the filters' failures
by reason, long drop reasons that fit, and the page of a real run as headless Chromium
renders it."""

import base64
import io
import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
import yaml
from PIL import Image

from browser import BrowserUnavailable, Chromium, find_chromium
from conftest import good_rows, write_shard
from thresher.pipeline.engine import report
from thresher.pipeline.engine.config import parse_config
from thresher.pipeline.io.storage import Store

PAINTED_PIXELS = 1500  # more than a legend's swatches: some data was drawn


def manifest(**changes) -> dict:
    """The parts of a run's manifest the report reads."""
    return {"run_id": "20260101T000000Z-test", "state": "finished", "seconds": 1.0,
            "plan": {"new": 1}, "shards": [], "invariant": {"ok": True}, "stages": {},
            "totals": {"rows_in": 5, "curated": 3, "rejected": 2, "quarantined": 0},
            "drop_reasons": {"lang_score<0.5": 2}, "mixture": None} | changes


def painted_pixels(png: bytes) -> int:
    """Pixels in colour (the bars and lines), not black, white or grey (axes, text)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())


def drawn(plots) -> dict[str, bytes]:
    return {p.title: base64.b64decode(p.png) for p in plots if p.drawn}


def not_drawn(plots) -> dict[str, str]:
    return {p.title: p.why_not for p in plots if not p.drawn}


# --- no empty plots ------------------------------------------------------------------

def score_table(lang_score: list[float]) -> pa.Table:
    """Rows whose other columns hold nothing to plot: all null, NaN or zero."""
    n = len(lang_score)
    return pa.table({
        "lang": pa.nulls(n, pa.string()),
        "lang_score": pa.array(lang_score, pa.float32()),
        "dataman_metric": pa.nulls(n, pa.float32()),  # DataMan selection off
        "ccnet_ppl": pa.array(([0.0, float("nan"), None] * n)[:n], pa.float32()),
        "dup_keep": pa.array(([True, None] * n)[:n]),
        "source": pa.nulls(n, pa.string()),
        "crawl": pa.array(["2026-01"] * n),
    })


def test_columns_with_nothing_to_plot_are_explained_not_drawn_empty():
    from thresher.stages import STAGES

    stages = [STAGES["dedup"](), STAGES["lang"]()]  # their own charts join the report
    plots = report.plots(manifest(mixture={"skipped": "2 groups needed, found 1"}),
                         score_table([0.9, 0.8, 0.95]), score_table([0.1, 0.2]),
                         proportions=None, stages=stages)

    assert set(drawn(plots)) == {"documents by outcome", "rejected documents by drop_reason",
                                 "lang_score (sample)"}
    why = not_drawn(plots)
    assert "null on every sampled row" in why["dataman_metric (sample)"]
    assert "no finite positive value" in why["log10 ccnet_ppl (sample)"]
    assert "`lang` is null" in why["documents per language (top 25)"]
    assert "no cluster" in why["duplicate clusters by size (this run's, counting earlier "
                               "runs' members)"]
    assert "no sampled row has both a `source`" in why["duplicate rate by source (sample)"]
    assert "removed no sampled document" in why["duplicate rate by crawl (sample)"]
    assert "2 groups needed" in why["Aioli mixture proportions over rounds"]
    for title, png in drawn(plots).items():
        assert painted_pixels(png) > PAINTED_PIXELS, f"{title} was drawn empty"


def test_a_run_with_no_rows_in_its_parts_draws_only_what_it_has():
    everything_quarantined = manifest(
        totals={"rows_in": 4, "curated": 0, "rejected": 0, "quarantined": 4}, drop_reasons={})
    plots = report.plots(everything_quarantined, pa.table({}), pa.table({}))
    assert set(drawn(plots)) == {"documents by outcome"}
    assert not_drawn(plots) == {"rejected documents by drop_reason": "no document was rejected"}


@pytest.mark.parametrize("draw", [
    lambda ax: ax.bar(["a", "b"], [0, 0]),
    lambda ax: ax.hist([[], []], bins=40, stacked=True, label=["curated", "rejected"]),
    lambda ax: ax.plot([1.0, 2.0], [float("nan"), float("nan")]),
], ids=["zero bars", "empty histogram", "line of NaN"])
def test_a_drawing_that_shows_nothing_becomes_a_note(draw):
    plot = report._figure("some plot", draw)
    assert not plot.drawn and "nothing to draw" in plot.why_not


def proportions(rounds: list[list[float]]) -> dict:
    method = {"p": rounds, "test_losses": [2.5, 2.7], "test_loss_mean": 2.6}
    return {"groups": ["en", "de"], "methods": {"aioli": method, "stratified": method}}


@pytest.mark.parametrize("mixture,found,why", [
    ({"p": [0.5, 0.5]}, None, "proportions.json was not found"),
    ({"p": [0.5, 0.5]}, proportions([]), "no groups or no Aioli rounds"),
    ({"p": [0.5, 0.5]}, proportions([[0.4, 0.6], [0.45, 0.55]]), None),
])
def test_mixture_plots_only_with_rounds_to_show(mixture, found, why):
    plots = report._mixture(mixture, found)
    assert len(plots) == 2
    if why:
        assert all(not p.drawn and why in p.why_not for p in plots)
    else:
        assert all(painted_pixels(png) > PAINTED_PIXELS for png in drawn(plots).values())


# --- the heuristic filters' failures, by reason ---------------------------------------

def filter_tables() -> tuple[pa.Table, pa.Table]:
    """Six rows scored by two heuristic filters and the URL filter: c4 passed them all."""
    curated = pa.table({
        "lang_score": pa.array([0.9, 0.9, 0.9], pa.float32()),
        "heuristics_gopher_quality": [True, True, True],
        "heuristics_gopher_quality_reason": pa.nulls(3, pa.string()),
        "heuristics_c4": [True, True, True],
        "heuristics_c4_reason": pa.nulls(3, pa.string()),
        "url_blocked": [False, False, True],
        "url_blocked_reason": [None, None, "adult_domain"],  # failed, but not a rule here
    })
    rejected = pa.table({
        "lang_score": pa.array([0.9, 0.9, 0.2], pa.float32()),
        "heuristics_gopher_quality": [False, False, False],
        "heuristics_gopher_quality_reason": ["gopher_short_doc", "gopher_short_doc",
                                             "gopher_below_alpha_threshold"],
        "heuristics_c4": [True, True, True],
        "heuristics_c4_reason": pa.nulls(3, pa.string()),
        "url_blocked": [False, False, False],
        "url_blocked_reason": pa.nulls(3, pa.string()),
        "drop_reason": ["heuristics_gopher_quality=false:gopher_short_doc"] * 2
                       + ["lang_score<0.5"],
    })
    return curated, rejected


def test_filter_failures_are_counted_per_filter_and_reason():
    curated, rejected = filter_tables()
    columns = report._reason_columns(curated, rejected)
    assert columns == ["heuristics_gopher_quality_reason", "heuristics_c4_reason",
                       "url_blocked_reason"]  # not drop_reason: the manifest counts those

    bars, passed = report._failure_bars(columns, curated, rejected)
    assert [(label, n) for label, n, _ in bars] == [
        ("heuristics_gopher_quality: gopher_short_doc", 2),
        ("heuristics_gopher_quality: gopher_below_alpha_threshold", 1),
        ("url_blocked: adult_domain", 1)]
    assert len({color for *_, color in bars}) == 2  # one colour per filter
    assert passed == ["heuristics_c4"]

    plots = report.plots(manifest(), curated, rejected)
    failures = drawn(plots)["rows failing each filter, by reason (sample of 6)"]
    assert painted_pixels(failures) > PAINTED_PIXELS


def test_filters_no_row_failed_are_a_note_not_an_empty_plot():
    curated, rejected = filter_tables()
    passing = [t.drop_columns(["heuristics_gopher_quality_reason", "url_blocked_reason"])
               for t in (curated, rejected)]
    why = not_drawn(report.plots(manifest(), *passing))
    assert why == {"rows failing each filter, by reason (sample of 6)":
                   "no sampled row failed heuristics_c4"}


def test_a_filter_with_many_reasons_shows_the_top_ones_and_sums_the_rest():
    shown = report.TOP_REASONS_PER_FILTER
    counts = Counter({f"reason_{i}": 100 - i for i in range(shown + 3)})
    top = report._top(counts, shown)
    assert top[:shown] == [(f"reason_{i}", 100 - i) for i in range(shown)]
    assert top[shown:] == [("3 other reasons", sum(100 - i for i in range(shown, shown + 3)))]


# --- long labels ---------------------------------------------------------------------

LONG_REASONS = [
    "heuristics_gopher_quality=false:gopher_below_alpha_threshold",
    "heuristics_gopher_repetition=false:duplicated_10_n_grams",
    "heuristics_fineweb=false:line_punct_ratio", "heuristics_c4=false:too_few_sentences",
    "url_blocked=true:adult_domain", "ccnet_bucket=tail", "lang_score<0.5",
] + [f"heuristics_gopher_quality=false:gopher_reason_{i}" for i in range(10)]


def layout_of_figures(monkeypatch) -> list[dict]:
    """For each figure the report saves: where its texts and bars lie, in pixels."""
    layouts = []
    save = report._png

    def measure_then_save(fig):
        fig.canvas.draw()
        ax = fig.axes[0]
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high]
        texts = [*ax.texts, ax.title, ax.xaxis.label, *ticks]  # (no y ticks: labels)
        layouts.append({
            "figure": fig.bbox,
            "texts": {t.get_text(): t.get_window_extent() for t in texts if t.get_text()},
            "bars": [bar.get_window_extent() for bar in ax.patches]})
        return save(fig)
    monkeypatch.setattr(report, "_png", measure_then_save)
    return layouts


def test_long_drop_reasons_are_written_in_full_and_fit_the_figure(monkeypatch):
    layouts = layout_of_figures(monkeypatch)
    reasons = {reason: 1000 - 50 * i for i, reason in enumerate(LONG_REASONS)}
    plot = report._reasons(manifest(drop_reasons=reasons))
    assert plot.drawn
    [layout] = layouts
    shown = LONG_REASONS[:report.TOP_DROP_REASONS] + ["2 other reasons"]
    assert set(shown) <= set(layout["texts"])  # in full, not cut
    for text, box in layout["texts"].items():
        assert (box.x0 >= -1 and box.y0 >= -1 and box.x1 <= layout["figure"].x1 + 1
                and box.y1 <= layout["figure"].y1 + 1), f"{text!r} runs off the figure"
    widest = max(bar.width for bar in layout["bars"])
    assert widest > layout["figure"].width / 2, "the labels squeezed the bars"
    for label in shown:  # a label sits above its bar, over no bar
        assert not any(layout["texts"][label].overlaps(bar) for bar in layout["bars"]), label


# --- the page of a real run, in a real browser ----------------------------------------

TOY_CONFIG = """
stages:
  - stage: lang
  - stage: 'report_columns:ToyFilter'
filters: ['lang_score >= 0.5', 'toyfilter_length != false']
"""

IMAGES = """Array.from(document.images, image => ({complete: image.complete,
    width: image.naturalWidth, height: image.naturalHeight}))"""


def png_size(png: bytes) -> dict:
    with Image.open(io.BytesIO(png)) as image:
        return {"width": image.width, "height": image.height}


@pytest.fixture
def chromium(tmp_path):
    """A headless Chromium, started before Ray is: the test skips without one."""
    if not find_chromium():
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; "
                    "`make test` tries to install it)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    try:
        browser = Chromium(profile)
    except BrowserUnavailable as err:
        pytest.skip(f"Chromium cannot start here: {err}")
    with browser:
        yield browser


def test_the_report_of_a_real_run_loads_every_plot_in_chromium(tmp_path, chromium, request):
    from thresher.pipeline.engine.run import curate

    request.getfixturevalue("ray_cluster")
    shard = write_shard(tmp_path / "crawl" / "a.parquet", good_rows(40))
    config = parse_config(yaml.safe_load(TOY_CONFIG), "report test config")
    result = curate([str(shard)], tmp_path / "out", config, progress=False)
    meant = report.build_plots(Store.at(str(tmp_path / "out")),
                               json.loads(result.manifest_path.read_text()),
                               [spec.build() for spec in config.stages])
    assert "rows failing each filter, by reason (sample of 40)" in drawn(meant)
    assert "toyfilter_unset (sample)" in not_drawn(meant)

    chromium.open(result.report_path.resolve().as_uri())
    images = chromium.evaluate(IMAGES)
    pngs = [base64.b64decode(p.png) for p in meant if p.drawn]
    assert len(images) == len(pngs)
    for image, png in zip(images, pngs):  # loaded and decoded, at the size of its plot
        assert image["complete"] and image["width"] > 0, image
        assert image == {"complete": True, **png_size(png)}
    assert "toyfilter_unset" in chromium.evaluate("document.body.innerText")

    screenshot = chromium.screenshot(tmp_path / "report.png")
    with Image.open(screenshot) as shot:
        assert shot.format == "PNG"
        width, height = shot.size
        pixels = np.asarray(shot.convert("RGB"))
    assert width == 1200 and 900 <= height <= 30_000, shot.size
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100, "the page is blank"
    assert painted_pixels(screenshot.read_bytes()) > PAINTED_PIXELS * len(images)
