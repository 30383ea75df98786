"""Language-ID throughput: thresher's pipeline vs the same work in one plain process.

  python bench/lang_throughput.py [--input data/demo-crawl] [--num-cpus 2]

Both sides read the same shards and run the same fastText lid.176 model:
  plain     one Python process: pyarrow reads each shard, fastText predicts, the
            table with `lang`/`lang_score` is written back as zstd Parquet
  thresher  `curate()` with a language-ID-only config (lang, keep lang_score >= 0.5):
            read, triage, lang, decide, write the curated/rejected parts, ledger,
            manifest and report; Ray started before the clock
Each side runs in its own child process; peak RSS is the largest sum of RSS over that
child and all its descendants (Ray's raylet, workers, ...), sampled every 0.1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.child import measure_child  # noqa: E402


def plain(inputs: list[str]) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from thresher.models.langid import FastTextLID
    from thresher.models.registry import resolve
    from thresher.pipeline.engine.shards import expand_inputs

    start = time.perf_counter()
    lid = FastTextLID(resolve("lid176"))
    docs = nbytes = 0
    with tempfile.TemporaryDirectory() as out:
        for i, path in enumerate(expand_inputs(inputs)):
            table = pq.read_table(path)
            texts = [t or "" for t in table.column("text").to_pylist()]
            langs, scores = lid.predict(texts)
            table = table.append_column("lang", pa.array(langs)).append_column(
                "lang_score", pa.array(scores, pa.float32()))
            pq.write_table(table, f"{out}/part-{i}.parquet", compression="zstd")
            docs += table.num_rows
            nbytes += sum(len(t.encode()) for t in texts)
    return {"docs": docs, "bytes": nbytes, "seconds": time.perf_counter() - start}


def thresher(inputs: list[str], num_cpus: int) -> dict:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from thresher.pipeline.engine import dag
    from thresher.pipeline.engine.config import parse_config
    from thresher.pipeline.engine.run import curate
    from thresher.pipeline.engine.shards import expand_inputs

    nbytes = sum(pc.sum(pc.binary_length(pq.read_table(p, columns=["text"]).column(0))).as_py()
                 or 0 for p in expand_inputs(inputs))
    ray_start = time.perf_counter()
    dag.connect(num_cpus=num_cpus)
    ray_seconds = time.perf_counter() - ray_start
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        config = parse_config({"stages": [{"stage": "lang", "resources": {"concurrency": 2}}],
                               "filters": ["lang_score >= 0.5"]}, "lang-only benchmark")
        result = curate(inputs, out, config, progress=False)
        seconds = time.perf_counter() - start
    return {"docs": result.totals["rows_in"], "bytes": nbytes, "seconds": seconds,
            "ray_start_seconds": ray_seconds}


def measure(mode: str, args) -> dict:
    """Run one side in a child process, sampling the RSS of its whole process tree."""
    command = [sys.executable, __file__, "--child", mode, "--num-cpus", str(args.num_cpus),
               "--input", *args.input]
    return measure_child(command, mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", nargs="+", default=["data/demo-crawl"])
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    parser.add_argument("--child", choices=["plain", "thresher"])
    args = parser.parse_args()
    if args.child:
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        result = plain(args.input) if args.child == "plain" else thresher(args.input, args.num_cpus)
        print(json.dumps(result))
        return

    rows = {mode: measure(mode, args) for mode in ("plain", "thresher")}
    print(f"\nlanguage ID on {', '.join(args.input)} ({args.num_cpus} CPUs for Ray)\n")
    print(f"| {'pipeline':<30} | {'docs':>7} | {'MB':>6} | {'wall s':>7} | {'docs/s':>7} | "
          f"{'MB/s':>5} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 32}|{'-' * 9}|{'-' * 8}|{'-' * 9}|{'-' * 9}|{'-' * 7}|{'-' * 13}|")
    names = {"plain": "plain process (pyarrow+fastText)", "thresher": "thresher curate (Ray Data)"}
    for mode, r in rows.items():
        mb = r["bytes"] / 1e6
        print(f"| {names[mode]:<30} | {r['docs']:>7,} | {mb:>6.1f} | {r['seconds']:>7.1f} | "
              f"{r['docs'] / r['seconds']:>7,.0f} | {mb / r['seconds']:>5.2f} | "
              f"{r['peak_rss_mb']:>11,.0f} |")
    ratio = rows["thresher"]["seconds"] / rows["plain"]["seconds"]
    print(f"\nthresher / plain wall time: {ratio:.2f}x  (Ray start-up, not counted above: "
          f"{rows['thresher']['ray_start_seconds']:.1f} s)")


if __name__ == "__main__":
    main()
