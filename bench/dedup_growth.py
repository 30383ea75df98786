"""How the dedup step's cost grows: over incremental crawls, with the size of one crawl,
and with one hot cluster.

  python bench/dedup_growth.py [--input data/demo-crawl] [--crawls 5] [--copied 0.3]
                               [--sizes 1 4 16] [--hot 200000] [--num-cpus 2]

Crawls are the demo crawl rewritten: crawl k tags every word with k's own letters, so
no two crawls share content by accident, and `--copied` of each crawl after the first
is replaced by documents of earlier crawls (half exact copies, half with a word added).
Each run is `thresher curate` with one stage, dedup, as a user runs it, in a child
process whose peak RSS (with its Ray) is sampled.

1. incremental: crawls 1..N into one output, one run each;
2. size: one crawl of 1x, 4x, 16x the demo (k rewrites together) into a new output;
3. hot: one crawl whose documents are all copies of one text.

Per run, from the run's manifest: the dedup step's seconds, component rounds, the
index's documents and bytes before the run, the rows its shuffles moved (counted by
the step: new key rows, candidate edges and component rounds, labels, decisions,
cluster keys, URL rows and decisions) and the index rows its ranges read (rows of the
key and URL indexes whose key is one of the run's own).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.child import watch  # noqa: E402

CONFIG = """stages:
  - stage: dedup
filters: ["dup_keep != false", "dup_url_keep != false"]
"""
_WORD = re.compile(r"[^\W\d_]+")


def tag(k: int) -> str:
    return "q" + "abcdefghijklmnop"[k % 16] + "abcdefghijklmnop"[k // 16 % 16]


def rewrite(table: pa.Table, k: int) -> pa.Table:
    """The demo's documents as crawl k has them: every word tagged, ids and URLs its own."""
    suffix = tag(k)
    texts = [_WORD.sub(lambda m: m.group() + suffix, t) for t in table.column("text").to_pylist()]
    ids = [f"c{k}-{i}" for i in table.column("id").to_pylist()]
    columns = {"id": ids, "text": texts, "crawl": [f"crawl-{k:02d}"] * table.num_rows}
    if "url" in table.column_names:
        columns["url"] = [u and f"{u}?c={k}" for u in table.column("url").to_pylist()]
    return pa.table(columns)


def build_crawls(demo: Path, work: Path, count: int, copied: float) -> list[Path]:
    shards = sorted(demo.glob("*.parquet"))
    tables = [pq.read_table(s, columns=[c for c in ("id", "text", "url")
                                        if c in pq.read_schema(s).names]) for s in shards]
    rng = random.Random(0)
    crawls, earlier = [], []
    for k in range(1, count + 1):
        folder = work / f"crawl-{k:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for shard, table in zip(shards, tables):
            mine = rewrite(table, k)
            if earlier and copied:
                texts = mine.column("text").to_pylist()
                for i in rng.sample(range(len(texts)), round(copied * len(texts))):
                    source = rng.choice(earlier)
                    text = source[rng.randrange(len(source))]
                    texts[i] = text if rng.random() < 0.5 else text + " addendum"
                mine = mine.set_column(mine.schema.get_field_index("text"), "text",
                                       pa.array(texts))
            pq.write_table(mine, folder / shard.name)
        earlier += [pq.read_table(p, columns=["text"]).column("text").to_pylist()
                    for p in sorted(folder.glob("*.parquet"))]
        crawls.append(folder)
    return crawls


def sized_crawl(crawls: list[Path], times: int, work: Path) -> Path:
    """One crawl of `times` rewrites together (crawl 1's and the next ones' shards)."""
    folder = work / f"size-{times}x"
    folder.mkdir(parents=True, exist_ok=True)
    for k, crawl in enumerate(crawls[:times]):
        for shard in sorted(crawl.glob("*.parquet")):
            target = folder / f"r{k:02d}-{shard.name}"
            if not target.exists():
                os.link(shard, target)
    return folder


def hot_crawl(count: int, work: Path) -> Path:
    folder = work / f"hot-{count}"
    folder.mkdir(parents=True, exist_ok=True)
    text = "the same boilerplate notice about cookies and privacy on every page of a site"
    per = 25_000
    for start in range(0, count, per):
        n = min(per, count - start)
        pq.write_table(pa.table({"id": [f"hot-{i}" for i in range(start, start + n)],
                                 "text": [text] * n}), folder / f"hot-{start:07d}.parquet")
    return folder


def run(crawl: Path, out: Path, cpus: int) -> dict:
    """One `thresher curate` in a child process; its new manifest and peak RSS."""
    config = out.with_suffix(".yaml")
    config.write_text(CONFIG)
    before = index_bytes(out)
    seen = set(out.glob("runs/*/manifest.json")) if out.exists() else set()
    command = [str(Path(sys.executable).with_name("thresher")), "--log-level", "WARNING",
               "curate", "-i", str(crawl), "-o", str(out), "-c", str(config), "--no-progress",
               "--num-cpus", str(cpus)]
    start = time.perf_counter()
    child = subprocess.Popen(command)
    _, peak = watch(child)
    if child.returncode:
        raise SystemExit(f"thresher curate failed with exit code {child.returncode}")
    seconds = time.perf_counter() - start
    (manifest_path,) = set(out.glob("runs/*/manifest.json")) - seen
    manifest = json.loads(manifest_path.read_text())
    dedup = manifest["dedup"]
    docs = dedup["documents_signed"]
    index_docs = dedup["index_documents_before"]
    return {"docs": docs, "seconds": seconds, "dedup_s": manifest["phases"]["dedup"],
            "rounds": dedup["rounds"], "index_docs": index_docs, "index_mb": before / 1e6,
            "rows_shuffled": sum(dedup["rows_shuffled"].values()),
            "index_rows_read": sum(dedup["index_rows_read"].values()),
            "peak_rss_mb": peak / 2**20,
            "removed": dedup["removed"], "phases": dedup["seconds"]}


def index_bytes(out: Path) -> int:
    return sum(f.stat().st_size for f in (out / "dedup").rglob("*") if f.is_file()) \
        if (out / "dedup").exists() else 0


def table(rows: list[tuple[str, dict]], base: dict) -> None:
    print("| run | documents | index docs before | index MB before | rows shuffled "
          "| index rows read | rounds | dedup s | s per 1k docs | peak RSS MB | removed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['docs']:,} | {r['index_docs']:,} | {r['index_mb']:.1f} | "
              f"{r['rows_shuffled']:,} | {r['index_rows_read']:,} | {r['rounds']} | "
              f"{r['dedup_s']:.1f} | "
              f"{1000 * r['dedup_s'] / r['docs']:.2f} | {r['peak_rss_mb']:,.0f} | "
              f"{r['removed']:,} |")
    last = rows[-1][1]
    print("\nlast / first: " + ", ".join(
        f"{k} {last[k] / base[k]:.2f}x" for k in ("dedup_s", "rows_shuffled", "peak_rss_mb")
        if base[k]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(ROOT / "data/demo-crawl"))
    parser.add_argument("--crawls", type=int, default=5)
    parser.add_argument("--copied", type=float, default=0.3)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--hot", type=int, default=200_000)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    parser.add_argument("--work", help="keep the crawls and outputs here (default: a temp dir)")
    args = parser.parse_args()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    with tempfile.TemporaryDirectory(prefix="thresher-growth-") as temp:
        work = Path(args.work or temp)
        for old in [work / "incremental", work / "hot-out", *work.glob("size-*x-out")]:
            shutil.rmtree(old, ignore_errors=True)  # outputs of an earlier bench in --work
        crawls = build_crawls(Path(args.input), work, max(args.crawls, max(args.sizes or [1])),
                              args.copied)
        if args.crawls:
            rows = [(f"crawl {k}", run(crawl, work / "incremental", args.num_cpus))
                    for k, crawl in enumerate(crawls[:args.crawls], 1)]
            print(f"\n{args.crawls} incremental crawls into one output ({args.copied:.0%} of "
                  f"each copied from earlier ones), {args.num_cpus} cores\n")
            table(rows, rows[0][1])
        if args.sizes:
            rows = [(f"{n}x", run(sized_crawl(crawls, n, work), work / f"size-{n}x-out",
                                  args.num_cpus)) for n in args.sizes]
            print(f"\none crawl at {', '.join(f'{n}x' for n in args.sizes)} the demo\n")
            table(rows, rows[0][1])
        if args.hot:
            r = run(hot_crawl(args.hot, work), work / "hot-out", args.num_cpus)
            print(f"\none cluster of {args.hot:,} exact copies: dedup {r['dedup_s']:.1f} s, "
                  f"{r['removed']:,} removed, peak RSS {r['peak_rss_mb']:,.0f} MB (the run and "
                  "its Ray, all processes)")


if __name__ == "__main__":
    main()
