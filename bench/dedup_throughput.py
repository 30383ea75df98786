"""Deduplication: thresher's dedup step against datatrove's MinHash pipeline, on the
same documents, parameters and cores. Two tables:

  python bench/dedup_throughput.py [--input data/demo-crawl] [--copies 4] [--num-cpus 2]

quality     the labelled set (pipeline/io/labelled_dups.py: 300 originals, each with an
            exact copy, three light edits, a heavy edit and two siblings): precision
            and recall of the removals, and the groups of true copies lost (every
            member removed)
throughput  the demo crawl copied 4 times (each copy a new set of shards, so three
            in four documents are exact copies, besides the crawl's own near copies):
            wall time, peak RSS and documents removed

  thresher   `thresher curate` with a config of one stage, dedup (near + exact, no URL
             key: datatrove's MinHash pipeline has none), and the filter
             `dup_keep != false`: the whole process, as a user runs it (Ray start-up,
             signature pass, clustering, the pass that writes curated and rejected
             parts with their columns, manifest, report)
  datatrove  its four steps, each a LocalPipelineExecutor with workers=cores, run one
             after the other: MinhashDedupSignature (ParquetReader), MinhashDedupBuckets,
             MinhashDedupCluster, MinhashDedupFilter (ParquetReader -> ParquetWriter of
             the kept documents, exclusion_writer of the removed ones); MinhashConfig
             n_grams=5, 14 buckets x 8 hashes, 64-bit xxhash, English (spaCy's blank
             tokenizer)

What differs: both shingle word 5-grams of normalized text, but the normalizations
differ (datatrove: its simplify_text and spaCy's tokenizer; thresher: cc_net's
normalization, then punctuation removed and whitespace split), and so do the hash
functions (datatrove xxhash64 per 5-gram; thresher blake2b per word, 5-grams combined)
and the member kept in a cluster. thresher also writes the removed documents with
all their columns and keeps an index for later crawls; datatrove keeps neither.
Peak RSS: the largest sum of RSS over each side's process tree, sampled every 0.1 s.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.child import curate, measure_child  # noqa: E402
from bench.engine_scaling import copies_of  # noqa: E402

CONFIG = """stages:
  - stage: dedup
    url: false
filters: ["dup_keep != false"]
"""


def run_thresher(crawl: str, out: str, cpus: int) -> dict:
    seconds, manifest = curate(crawl, out, CONFIG, cpus)
    removed = _ids(f"{out}/rejected/*.parquet")
    return {"docs": manifest["totals"]["rows_in"], "seconds": seconds,
            "removed": manifest["totals"]["rejected"], "removed_ids": sorted(removed),
            "phases": manifest["phases"], "dedup": manifest["dedup"]["seconds"]}


def run_datatrove(crawl: str, out: str, cpus: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets,
                                                  MinhashDedupCluster, MinhashDedupFilter,
                                                  MinhashDedupSignature)
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.hashing import HashConfig

    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8,
                           hash_config=HashConfig(precision=64))
    shards = len(glob.glob(f"{crawl}/*.parquet"))

    def reader():
        return ParquetReader(crawl, glob_pattern="*.parquet", text_key="text", id_key="id")

    steps = [
        ([reader(), MinhashDedupSignature(output_folder=f"{out}/signatures", config=config,
                                          language="en")], shards),
        ([MinhashDedupBuckets(input_folder=f"{out}/signatures", output_folder=f"{out}/buckets",
                              config=config)], config.num_buckets),
        ([MinhashDedupCluster(input_folder=f"{out}/buckets", output_folder=f"{out}/remove_ids",
                              config=config)], 1),
        ([reader(), MinhashDedupFilter(input_folder=f"{out}/remove_ids",
                                       exclusion_writer=ParquetWriter(f"{out}/removed")),
          ParquetWriter(f"{out}/kept")], shards),
    ]
    start = time.perf_counter()
    for i, (pipeline, tasks) in enumerate(steps):
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(cpus, tasks),
                              logging_dir=f"{out}/logs-{i}").run()
    seconds = time.perf_counter() - start
    removed = _ids(f"{out}/removed/*.parquet")
    kept = _ids(f"{out}/kept/*.parquet", count_only=True)
    return {"docs": kept + len(removed), "seconds": seconds, "removed": len(removed),
            "removed_ids": sorted(removed)}


def _ids(pattern: str, count_only: bool = False):
    import pyarrow.parquet as pq

    files = glob.glob(pattern)
    if count_only:
        return sum(pq.read_metadata(f).num_rows for f in files)
    return [i for f in files for i in pq.read_table(f, columns=["id"]).column(0).to_pylist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(ROOT / "data/demo-crawl"))
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--originals", type=int, default=300)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        side, crawl, out = args.child
        run = run_thresher if side == "thresher" else run_datatrove
        print(json.dumps(run(crawl, out, args.num_cpus)))
        return

    import pyarrow.parquet as pq

    from thresher.pipeline.io import labelled_dups

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    with tempfile.TemporaryDirectory(prefix="thresher-bench-") as work:
        work = Path(work)

        def child(side: str, crawl: Path, name: str) -> dict:
            return measure_child([sys.executable, __file__, "--num-cpus", str(args.num_cpus),
                                  "--child", side, str(crawl), str(work / f"{side}-{name}")],
                                 f"{side} {name}")

        labelled = labelled_dups.build(args.input, originals=args.originals)
        sets = work / "labelled"
        sets.mkdir()
        half = labelled.num_rows // 2
        pq.write_table(labelled.slice(0, half), sets / "part-0.parquet")
        pq.write_table(labelled.slice(half), sets / "part-1.parquet")
        quality = {side: labelled_dups.score(labelled, set(child(side, sets, "labelled")
                                                           ["removed_ids"]))
                   for side in ("thresher", "datatrove")}

        crawl = copies_of(Path(args.input), args.copies, work)
        speed = {side: child(side, crawl, f"{args.copies}x") for side in ("thresher", "datatrove")}

    print(f"\nquality on the labelled set ({labelled.num_rows} documents, {args.originals} "
          f"groups of 5 true copies), {args.num_cpus} cores\n")
    print("| method | removed | precision | recall | groups lost | heavy edits removed | "
          "siblings removed |")
    print("|---|---|---|---|---|---|---|")
    for side, q in quality.items():
        print(f"| {side} | {q['removed']} | {q['precision']:.4f} | {q['recall']:.4f} | "
              f"{q['groups_lost']} | {q['heavy_removed']} | {q['siblings_removed']} |")
    ours, peer = speed["thresher"], speed["datatrove"]
    both = set(ours["removed_ids"]) & set(peer["removed_ids"])
    print(f"\nthroughput on {args.input} x {args.copies} ({ours['docs']:,} documents), "
          f"{args.num_cpus} cores\n")
    print("| method | wall s | docs/s | peak RSS MB | removed | speed vs datatrove |")
    print("|---|---|---|---|---|---|")
    for side, r in speed.items():
        print(f"| {side} | {r['seconds']:.1f} | {r['docs'] / r['seconds']:,.0f} | "
              f"{r['peak_rss_mb']:,.0f} | {r['removed']:,} | "
              f"{peer['seconds'] / r['seconds']:.2f}x |")
    print(f"\nremoved ids in common: {len(both):,} (ids repeat across copies: counted once)")
    print("thresher phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in ours["phases"].items()))
    print("thresher dedup step (s): " + ", ".join(f"{k} {v:.1f}" for k, v in ours["dedup"].items()))


if __name__ == "__main__":
    main()
