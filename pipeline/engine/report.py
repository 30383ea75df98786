"""OUT/runs/<run_id>/report.html: a static page with the run's counts and plots.

Plots read only the score columns of this run's parts (never `text`), and at most
SAMPLE_ROWS rows of them, so a report costs the same on any corpus size.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.fs as pafs  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from thresher.pipeline.io.storage import Store  # noqa: E402
from thresher.pipeline.engine.write import is_synthetic_part, part_shard_key  # noqa: E402

SAMPLE_ROWS = 200_000
_NOT_SCORES = {"source_row", "rows"}


def write(out: Store, run_dir: Path, manifest: dict) -> Path:
    keys = {s["key"] for s in manifest["shards"]}
    curated = _sample(out, "curated", keys)
    rejected = _sample(out, "rejected", keys)
    figures = [_outcomes(manifest), _reasons(manifest)]
    if "lang" in curated.column_names + rejected.column_names:
        figures.append(_per_language(curated, rejected))
    if "dup_keep" in curated.column_names + rejected.column_names:
        figures += [_cluster_sizes(out, manifest["run_id"]),
                    *(_dup_rate(curated, rejected, by) for by in ("source", "crawl"))]
    for column in _score_columns(curated, rejected):
        figures.append(_histogram(column, curated, rejected))
    proportions = out.path("mixture", "proportions.json")
    if manifest.get("mixture") and "p" in manifest["mixture"] and out.exists(proportions):
        figures += _mixture(json.loads(out.read_text(proportions)))
    path = run_dir / "report.html"
    path.write_text(_page(manifest, [f for f in figures if f]))
    return path


def _sample(out: Store, folder: str, keys: set[str]) -> pa.Table:
    tables, rows = [], 0
    for part in out.files(folder, "part-*.parquet"):
        if part_shard_key(part) not in keys or is_synthetic_part(part):
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


def _score_columns(*tables: pa.Table) -> list[str]:
    names = []
    for table in tables:
        for f in table.schema:
            if pa.types.is_floating(f.type) and f.name not in _NOT_SCORES and f.name not in names:
                names.append(f.name)
    return names


def _figure(draw) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    draw(ax)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _mixture(mixture: dict) -> list[str]:
    """Aioli's p over rounds, and each method's per-group test loss."""
    groups, methods = mixture["groups"], mixture["methods"]
    rounds = methods["aioli"]["p"]

    def proportions(ax):
        for j, group in enumerate(groups):
            ax.plot(range(1, len(rounds) + 1), [p[j] for p in rounds], marker="o", label=group)
        ax.set_xlabel("round")
        ax.set_ylabel("p")
        ax.set_title("Aioli mixture proportions over rounds")
        ax.legend()

    def losses(ax):
        width = 0.8 / len(methods)
        for k, (name, result) in enumerate(methods.items()):
            ax.bar([j + k * width for j in range(len(groups))], result["test_losses"],
                   width, label=f"{name} (mean {result['test_loss_mean']:.3f})")
        ax.set_xticks([j + width * (len(methods) - 1) / 2 for j in range(len(groups))], groups)
        ax.set_ylabel("test loss (nats/byte)")
        ax.set_title("proxy model: per-group test loss, same budget")
        ax.legend()
    return [_figure(proportions), _figure(losses)]


def _outcomes(manifest: dict) -> str:
    totals = manifest["totals"]
    names = ["curated", "rejected", "quarantined"]

    def draw(ax):
        ax.bar(names, [totals[n] for n in names], color=["#2a7", "#d63", "#888"])
        ax.set_title("documents by outcome")
    return _figure(draw)


def _reasons(manifest: dict) -> str | None:
    reasons = list(manifest["drop_reasons"].items())[:15]
    if not reasons:
        return None

    def draw(ax):
        ax.barh([r for r, _ in reasons][::-1], [n for _, n in reasons][::-1], color="#d63")
        ax.set_title("rejected documents by drop_reason")
    return _figure(draw)


def _per_language(curated: pa.Table, rejected: pa.Table) -> str:
    def counts(table):
        if "lang" not in table.column_names:
            return {}
        vc = table.column("lang").value_counts().to_pylist()
        return {d["values"]: d["counts"] for d in vc if d["values"] is not None}
    kept, dropped = counts(curated), counts(rejected)
    langs = sorted(set(kept) | set(dropped), key=lambda l: -(kept.get(l, 0) + dropped.get(l, 0)))[:25]

    def draw(ax):
        ax.bar(langs, [kept.get(l, 0) for l in langs], label="curated", color="#2a7")
        ax.bar(langs, [dropped.get(l, 0) for l in langs], bottom=[kept.get(l, 0) for l in langs],
               label="rejected", color="#d63")
        ax.set_title("documents per language (top 25)")
        ax.tick_params(axis="x", rotation=60)
        ax.legend()
    return _figure(draw)


def _cluster_sizes(out: Store, run_id: str) -> str | None:
    """Clusters this run found or grew, by size (members across all runs so far)."""
    sizes: dict[int, int] = {}
    seen = set()
    for folder in out.fs.get_file_info(pafs.FileSelector(out.path("dedup", "clusters"),
                                                         allow_not_found=True)):
        path = f"{folder.path}/{run_id}.parquet"
        if folder.type != pafs.FileType.Directory or not out.exists(path):
            continue
        table = out.read_table(path, columns=["rep", "size"])
        for rep, size in zip(table.column("rep").to_pylist(), table.column("size").to_pylist()):
            if rep not in seen:
                seen.add(rep)
                sizes[size] = sizes.get(size, 0) + 1
        if len(seen) >= SAMPLE_ROWS:
            break
    if not sizes:
        return None

    order = sorted(sizes)

    def draw(ax):  # positions, not labels: labels that read as numbers make matplotlib talk
        ax.bar(range(len(order)), [sizes[k] for k in order], color="#36c")
        ax.set_xticks(range(len(order)), [str(k) for k in order])
        ax.set_yscale("log")
        ax.set_xlabel("documents in the cluster")
        ax.set_title("duplicate clusters by size (this run's, counting earlier runs' members)")
        ax.tick_params(axis="x", rotation=60)
    return _figure(draw)


def _dup_rate(curated: pa.Table, rejected: pa.Table, by: str) -> str | None:
    """The share of documents dedup removed, per value of `by` (top 25 by count)."""
    counts: dict[str, list[int]] = {}
    for table in (curated, rejected):
        if by not in table.column_names or "dup_keep" not in table.column_names:
            continue
        for value, keep in zip(table.column(by).to_pylist(), table.column("dup_keep").to_pylist()):
            entry = counts.setdefault(str(value), [0, 0])
            entry[0] += 1
            entry[1] += keep is False
    if not counts:
        return None
    names = sorted(counts, key=lambda k: -counts[k][0])[:25]

    def draw(ax):
        ax.bar(range(len(names)), [100 * counts[n][1] / counts[n][0] for n in names],
               color="#36c")
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel("% removed as duplicates")
        ax.set_title(f"duplicate rate by {by} (sample)")
        ax.tick_params(axis="x", rotation=60)
    return _figure(draw)


def _histogram(column: str, curated: pa.Table, rejected: pa.Table) -> str:
    # Perplexities span orders of magnitude: plot them on a log scale.
    log = column.endswith("_ppl")

    def values(table):
        if column not in table.column_names:
            return []
        found = table.column(column).drop_null().to_pylist()
        return [math.log10(v) for v in found if v > 0] if log else found

    def draw(ax):
        ax.hist([values(curated), values(rejected)], bins=40, stacked=True,
                label=["curated", "rejected"], color=["#2a7", "#d63"])
        ax.set_title(f"{'log10 ' if log else ''}{column} (sample)")
        ax.legend()
    return _figure(draw)


def _page(manifest: dict, figures: list[str]) -> str:
    esc = html.escape
    totals = "".join(f"<tr><th>{esc(k)}</th><td>{v:,}</td></tr>"
                     for k, v in manifest["totals"].items())
    stages = "".join(
        f"<tr><td>{esc(n)}</td><td>{s['worker_seconds']}</td><td>{s['rows_per_worker_second']}</td></tr>"
        for n, s in manifest["stages"].items())
    images = "".join(f'<img src="data:image/png;base64,{f}">' for f in figures)
    invariant = "holds" if manifest["invariant"]["ok"] else "VIOLATED"
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>thresher run {esc(manifest['run_id'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
img{{margin:6px;border:1px solid #eee}}</style></head><body>
<h1>thresher run {esc(manifest['run_id'])}</h1>
<p>state <b>{esc(manifest['state'])}</b>, {manifest['seconds']} s, {len(manifest['shards'])} shards
processed ({esc(str(manifest['plan']))}); invariant rows_in = curated + rejected + quarantined
<b>{invariant}</b>.</p>
<table>{totals}</table>
<table><tr><th>stage</th><th>worker seconds</th><th>rows per worker second</th></tr>{stages}</table>
{images}
</body></html>"""
