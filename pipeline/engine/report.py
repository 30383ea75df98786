"""OUT/runs/<run_id>/report.html: a static page with the run's counts and plots.

Plots read only the score columns of this run's parts (never `text`), and at most
SAMPLE_ROWS rows of them, so a report costs the same on any corpus size.

A plot with nothing to show is not drawn: the page lists it with the reason instead
(a score column that is null on every row, such as the score of a stage that did
not run on the sample; a stage chart with nothing in it; a mixture step that was
skipped).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyarrow as pa  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from thresher.pipeline.io.storage import Store  # noqa: E402
from thresher.stages.base import present  # noqa: E402
from thresher.pipeline.engine.write import is_made_part, part_shard_key  # noqa: E402

SAMPLE_ROWS = 200_000
_NOT_SCORES = {"source_row", "rows"}
TOP_DROP_REASONS = 15
TOP_REASONS_PER_FILTER = 6  # four heuristic filters and the URL filter: 35 bars at most
LABEL_CHARS = 90  # a bar's label is written above it, across the plot's width
_FILTER_COLORS = ["#d63", "#36c", "#a5c", "#2a7", "#c90", "#0aa", "#888"]


@dataclass
class Plot:
    """One figure of the report: a base64 PNG, or why there is none."""

    title: str
    png: str | None = None
    why_not: str | None = None

    @property
    def drawn(self) -> bool:
        return self.png is not None


def write(out: Store, run_dir: Path, manifest: dict, stages: list = ()) -> Path:
    path = run_dir / "report.html"
    path.write_text(_page(manifest, build_plots(out, manifest, stages)))
    return path


def build_plots(out: Store, manifest: dict, stages: list = ()) -> list[Plot]:
    """The report's plots for this run, drawn or explained, from what it wrote;
    `stages`: the run's stages (built), whose charts() add their own plots."""
    keys = {s["key"] for s in manifest["shards"]}
    curated = _sample(out, "curated", keys)
    rejected = _sample(out, "rejected", keys)
    return plots(manifest, curated, rejected, _read_proportions(out, manifest), stages)


def plots(manifest: dict, curated: pa.Table, rejected: pa.Table,
          proportions: dict | None = None, stages: list = ()) -> list[Plot]:
    """The plots from what was read: the manifest, a sample of the curated and the
    rejected parts' score columns, mixture/proportions.json (None: not written), and
    each stage's own charts (a stage that did not run in this sample is skipped)."""
    columns = set(curated.column_names) | set(rejected.column_names)
    found = [_outcomes(manifest), _reasons(manifest)]
    for stage in stages:
        if columns & set(stage.columns):
            found += [_chart(chart) for chart in stage.charts(curated, rejected, manifest)]
    reason_columns = _reason_columns(curated, rejected)
    if reason_columns:
        found.append(_filter_failures(reason_columns, curated, rejected))
    found += [_histogram(column, curated, rejected)
              for column in _score_columns(curated, rejected)]
    if manifest.get("mixture"):
        found += _mixture(manifest["mixture"], proportions)
    return [plot for plot in found if plot]


# --- reading -------------------------------------------------------------------------

def _sample(out: Store, folder: str, keys: set[str]) -> pa.Table:
    tables, rows = [], 0
    for part in out.files(folder, "part-*.parquet"):
        if part_shard_key(part) not in keys or is_made_part(part):
            continue
        columns = [f.name for f in out.schema(part) if f.name != "text" and _scalar(f.type)]
        table = out.read_table(part, columns=columns)
        tables.append(table)
        rows += table.num_rows
        if rows >= SAMPLE_ROWS:
            break
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive").slice(0, SAMPLE_ROWS)


def _scalar(typ: pa.DataType) -> bool:
    return (pa.types.is_floating(typ) or pa.types.is_integer(typ) or pa.types.is_string(typ)
            or pa.types.is_boolean(typ))


def _read_proportions(out: Store, manifest: dict) -> dict | None:
    path = out.path("mixture", "proportions.json")
    mixture = manifest.get("mixture") or {}
    if "p" not in mixture or not out.exists(path):
        return None
    return json.loads(out.read_text(path))


def _score_columns(*tables: pa.Table) -> list[str]:
    names = []
    for table in tables:
        for f in table.schema:
            if pa.types.is_floating(f.type) and f.name not in _NOT_SCORES and f.name not in names:
                names.append(f.name)
    return names


def _reason_columns(*tables: pa.Table) -> list[str]:
    """Per-filter reason columns (`<filter>_reason`, written by the stages that say why): why a
    row failed that filter, null where it passed. `drop_reason` is not one: it is the
    run's decision, plotted from the manifest's exact counts."""
    names = []
    for table in tables:
        for f in table.schema:
            if (f.name.endswith("_reason") and f.name != "drop_reason"
                    and pa.types.is_string(f.type) and f.name not in names):
                names.append(f.name)
    return names


# --- drawing -------------------------------------------------------------------------

def _figure(title: str, draw, height: float = 3.6) -> Plot:
    """Draw one plot, unless the drawing shows nothing (every bar zero, every value
    missing): then the page says so instead of showing an empty axis."""
    fig, ax = plt.subplots(figsize=(7, height))
    try:
        draw(ax)
        ax.set_title(title)
        if not _shows_data(ax):
            return Plot(title, why_not="nothing to draw: every value is zero or missing")
        fig.tight_layout()
        return Plot(title, png=_png(fig))
    finally:
        plt.close(fig)


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode()


def _shows_data(ax) -> bool:
    """Whether the axes hold a bar of non-zero size or a line with a finite point."""
    def visible(bar):
        width, height = abs(bar.get_width()), abs(bar.get_height())
        return math.isfinite(width * height) and width * height > 0
    bars = any(visible(p) for p in ax.patches if isinstance(p, Rectangle))
    drawn = any(math.isfinite(x) and math.isfinite(y)
                for line in ax.lines for x, y in line.get_xydata())
    return bars or drawn


def _labelled_bars(ax, bars: list[tuple[str, int]], colors: list[str],
                   total: int | None = None) -> None:
    """Horizontal bars, top down, each with its label written above it: long labels
    (`<filter>=false:<why>`, often 50 characters) keep the plot's width
    instead of squeezing it to make room for tick labels."""
    counts = [n for _, n in bars]
    rects = ax.barh([-i for i in range(len(bars))], counts, height=0.45, color=colors)
    for i, (label, _) in enumerate(bars):
        short = label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"
        ax.annotate(short, (0, -i + 0.25), xytext=(3, 0), textcoords="offset points",
                    va="bottom", fontsize=8)  # off the axis line, so it stays legible
    ends = [f"{n:,}" + (f" ({100 * n / total:.1f}%)" if total else "") for n in counts]
    ax.bar_label(rects, ends, padding=3, fontsize=8)
    ax.set_xlim(0, max(counts) * 1.25)  # room for the counts at the bars' ends
    ax.set_ylim(-len(bars) + 0.5, 0.85)
    ax.set_yticks([])


def _bars_height(bars: int) -> float:
    """Inches: room for each bar and the line of text above it."""
    return max(2.4, 0.34 * bars + 1.2)


def _outcomes(manifest: dict) -> Plot:
    title = "documents by outcome"
    totals = manifest["totals"]
    names = ["curated", "rejected", "quarantined"]
    if not any(totals[n] for n in names):
        return Plot(title, why_not="no document was curated, rejected or quarantined")

    def draw(ax):
        ax.bar(names, [totals[n] for n in names], color=["#2a7", "#d63", "#888"])
    return _figure(title, draw)


def _reasons(manifest: dict) -> Plot:
    title = "rejected documents by drop_reason"
    if not manifest["drop_reasons"]:
        return Plot(title, why_not="no document was rejected")
    shown = _top(Counter(manifest["drop_reasons"]), TOP_DROP_REASONS)

    def draw(ax):
        _labelled_bars(ax, shown, ["#d63"] * len(shown))
        ax.set_xlabel("documents")
    return _figure(title, draw, _bars_height(len(shown)))


def _filter_failures(columns: list[str], curated: pa.Table, rejected: pa.Table) -> Plot:
    """Rows that failed each filter, by the filter's reason, whether or not that
    filter decided their fate (an earlier rule may have dropped them first)."""
    rows = curated.num_rows + rejected.num_rows
    title = f"rows failing each filter, by reason (sample of {rows:,})"
    bars, passed = _failure_bars(columns, curated, rejected)
    if not bars:
        return Plot(title, why_not=f"no sampled row failed {', '.join(passed)}")

    def draw(ax):
        _labelled_bars(ax, [(label, n) for label, n, _ in bars],
                       [color for _, _, color in bars], total=rows)
        passing = textwrap.fill(f"none failed: {', '.join(passed)}", 90) if passed else ""
        ax.set_xlabel("\n".join(filter(None, ["rows", passing])))
    return _figure(title, draw, _bars_height(len(bars)))


def _failure_bars(columns: list[str], curated: pa.Table,
                  rejected: pa.Table) -> tuple[list[tuple[str, int, str]], list[str]]:
    """Bars ("<filter>: <reason>", rows, color), one color per filter, and the filters
    no sampled row failed. A row failed a filter where the filter's reason is set."""
    bars, passed = [], []
    for k, column in enumerate(columns):
        name = column.removesuffix("_reason")
        counts = Counter(present(curated, column) + present(rejected, column))
        if not counts:
            passed.append(name)
        color = _FILTER_COLORS[k % len(_FILTER_COLORS)]
        bars += [(f"{name}: {reason}", n, color)
                 for reason, n in _top(counts, TOP_REASONS_PER_FILTER)]
    return bars, passed


def _top(counts: Counter, n: int) -> list[tuple[str, int]]:
    """The n most common, and the rest summed into one bar (which says how many)."""
    top = counts.most_common(n)
    rest = counts.most_common()[n:]
    return top + ([(f"{len(rest)} other reasons", sum(c for _, c in rest))] if rest else [])


COLOURS = {"curated": "#2a7", "rejected": "#d63"}


def _chart(chart) -> Plot | None:
    """A stage's Chart (stages/base.py) drawn as stacked bars, or its why_not."""
    if chart is None:
        return None
    if chart.why_not:
        return Plot(chart.title, why_not=chart.why_not)
    positions = range(len(chart.labels))

    def draw(ax):  # positions, not labels: labels that read as numbers make matplotlib talk
        bottom = [0.0] * len(chart.labels)
        for name, values in chart.series.items():
            ax.bar(positions, values, bottom=bottom, label=name,
                   color=COLOURS.get(name, "#36c"))
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_xticks(positions, chart.labels)
        ax.tick_params(axis="x", rotation=60)
        if chart.log_y:
            ax.set_yscale("log")
        if chart.ylabel:
            ax.set_ylabel(chart.ylabel)
        if chart.xlabel:
            ax.set_xlabel(chart.xlabel)
        if len(chart.series) > 1:
            ax.legend()
    return _figure(chart.title, draw)


def _histogram(column: str, curated: pa.Table, rejected: pa.Table) -> Plot:
    # Perplexities span orders of magnitude: plot them on a log scale.
    log = column.endswith("_ppl")
    title = f"{'log10 ' if log else ''}{column} (sample)"
    kept, dropped = _plottable(curated, column, log), _plottable(rejected, column, log)
    if not kept and not dropped:
        return Plot(title, why_not=_why_no_values(column, log, curated, rejected))

    def draw(ax):
        ax.hist([kept, dropped], bins=40, stacked=True, label=["curated", "rejected"],
                color=["#2a7", "#d63"])
        ax.legend()
    return _figure(title, draw)


def _plottable(table: pa.Table, column: str, log: bool) -> list[float]:
    """Finite values (and only positive ones, as log10, on a log scale)."""
    values = [v for v in present(table, column) if math.isfinite(v)]
    return [math.log10(v) for v in values if v > 0] if log else values


def _why_no_values(column: str, log: bool, *tables: pa.Table) -> str:
    if not any(present(table, column) for table in tables):
        return f"`{column}` is null on every sampled row: its stage did not set it in this run"
    return f"`{column}` has no finite{' positive' if log else ''} value in the sample"


def _mixture(mixture: dict, proportions: dict | None) -> list[Plot]:
    """Aioli's p over rounds, and each method's per-group test loss."""
    titles = ["Aioli mixture proportions over rounds",
              "proxy model: per-group test loss, same budget"]
    why_not = _why_no_mixture(mixture, proportions)
    if why_not:
        return [Plot(title, why_not=why_not) for title in titles]
    groups, methods = proportions["groups"], proportions["methods"]
    rounds = methods["aioli"]["p"]

    def over_rounds(ax):
        for j, group in enumerate(groups):
            ax.plot(range(1, len(rounds) + 1), [p[j] for p in rounds], marker="o", label=group)
        ax.set_xlabel("round")
        ax.set_ylabel("p")
        ax.legend()

    def losses(ax):
        width = 0.8 / len(methods)
        for k, (name, result) in enumerate(methods.items()):
            ax.bar([j + k * width for j in range(len(groups))], result["test_losses"],
                   width, label=f"{name} (mean {result['test_loss_mean']:.3f})")
        ax.set_xticks([j + width * (len(methods) - 1) / 2 for j in range(len(groups))], groups)
        ax.set_ylabel("test loss (nats/byte)")
        ax.legend()
    return [_figure(titles[0], over_rounds), _figure(titles[1], losses)]


def _why_no_mixture(mixture: dict, proportions: dict | None) -> str | None:
    if "skipped" in mixture:
        return f"the mixture step was skipped: {mixture['skipped']}"
    if not proportions:
        return "mixture/proportions.json was not found"
    methods = proportions.get("methods") or {}
    if not proportions.get("groups") or not (methods.get("aioli") or {}).get("p"):
        return "mixture/proportions.json holds no groups or no Aioli rounds"
    return None


def _page(manifest: dict, figures: list[Plot]) -> str:
    esc = html.escape
    totals = "".join(f"<tr><th>{esc(k)}</th><td>{v:,}</td></tr>"
                     for k, v in manifest["totals"].items())
    stages = "".join(
        f"<tr><td>{esc(n)}</td><td>{s['worker_seconds']}</td><td>{s['rows_per_worker_second']}</td></tr>"
        for n, s in manifest["stages"].items())
    images = "".join(f'<img src="data:image/png;base64,{p.png}">' for p in figures if p.drawn)
    missing = "".join(f"<li>{esc(p.title)}: {esc(p.why_not)}</li>" for p in figures
                      if not p.drawn)
    not_drawn = f"<h2>Not plotted</h2><ul>{missing}</ul>" if missing else ""
    invariant = "holds" if manifest["invariant"]["ok"] else "VIOLATED"
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>thresher run {esc(manifest['run_id'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
img{{margin:6px;border:1px solid #eee;vertical-align:top}}h2{{font-size:1.1em}}</style></head><body>
<h1>thresher run {esc(manifest['run_id'])}</h1>
<p>state <b>{esc(manifest['state'])}</b>, {manifest['seconds']} s, {len(manifest['shards'])} shards
processed ({esc(str(manifest['plan']))}); invariant rows_in = curated + rejected + quarantined
<b>{invariant}</b>.</p>
<table>{totals}</table>
<table><tr><th>stage</th><th>worker seconds</th><th>rows per worker second</th></tr>{stages}</table>
{images}
{not_drawn}
</body></html>"""
