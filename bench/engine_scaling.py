"""Engine scaling: thresher's whole process and streaming pass against the raw kernels'
limit and datatrove's pipeline, on the same documents, models and cores.

  python bench/engine_scaling.py [--input data/demo-crawl] [--copies 1 4] [--num-cpus 2]

Work: language ID (fastText lid.176, keep score >= 0.5) then CCNet perplexity
(cc_net normalization, SentencePiece, 5-gram KenLM, models-data/ccnet) with its tail
dropped, over the demo crawl copied 1x and 4x (each copy a new set of shards).

  thresher   `thresher curate` with a lang + ccnet config, as a user runs it: the
             whole process (Python, Ray start-up, calibration, streaming pass,
             recount, manifest, report); the streaming pass is the manifest's phase
             "stream" (first shard read to last tally, worker start-up included)
  kernels    the limit: one plain process per core, each on its share of the shards:
             pyarrow read, fastText predict, cc_net normalize + SentencePiece + KenLM
             per document in the model's language; models loaded before the clock,
             nothing written
  datatrove  LocalPipelineExecutor(workers=cores): ParquetReader -> LanguageFilter
             (lid.176.ftz, threshold 0.5) -> a BaseFilter calling datatrove's
             KenlmModel on the same lm_dir with thresher's calibrated tail cut-off ->
             ParquetWriter; model loading inside its run, as for thresher

What differs: datatrove's LanguageFilter asks fastText for all 176 labels per document
(thresher asks for the best one), and its KenlmModel collapses digit runs (cc_net maps
each digit to 0); datatrove writes only the kept documents, thresher writes kept and
rejected with all scores.
Peak RSS: the largest sum of RSS over each side's process tree (Ray's daemons and
workers, datatrove's worker processes), sampled every 0.1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.child import curate, measure_child  # noqa: E402

CONFIG = """stages:
  - stage: lang
  - stage: ccnet
    lm_dir: {lm_dir}
filters: ["lang_score >= 0.5", "ccnet_bucket != tail"]
"""


def copies_of(crawl: Path, copies: int, work: Path) -> Path:
    """The demo crawl `copies` times over, as new shards (hard links where possible)."""
    if copies == 1:
        return crawl
    target = work / f"crawl-{copies}x"
    target.mkdir(parents=True, exist_ok=True)
    for c in range(copies):
        for shard in sorted(crawl.glob("*.parquet")):
            dest = target / f"copy{c}-{shard.name}"
            if not dest.exists():
                shutil.copyfile(shard, dest)
    return target


def run_thresher(crawl: str, out: str, lm_dir: str, cpus: int) -> dict:
    seconds, manifest = curate(crawl, out, CONFIG.format(lm_dir=lm_dir), cpus)
    return {"docs": manifest["totals"]["rows_in"], "seconds": seconds,
            "kept": manifest["totals"]["curated"], "phases": manifest["phases"]}


def _kernel_worker(args) -> tuple[int, int]:
    paths, lm_dir, barrier_time = args
    import pyarrow.parquet as pq

    from thresher.models.kenlm_lm import CCNetLM, lm_dir_languages
    from thresher.models.langid import FastTextLID
    from thresher.models.normalize import normalize
    from thresher.models.registry import resolve

    lid = FastTextLID(resolve("lid176"))
    models = {lang: CCNetLM(*files) for lang, files in lm_dir_languages(Path(lm_dir)).items()}
    while time.time() < barrier_time:  # every process starts the clock together
        time.sleep(0.001)
    docs = kept = 0
    for path in paths:
        texts = [t or "" for t in pq.read_table(path, columns=["text"]).column(0).to_pylist()]
        langs, scores = lid.predict(texts)
        by_lang: dict[str, list[str]] = {}
        for text, lang, score in zip(texts, langs, scores):
            if score >= 0.5 and lang in models:
                by_lang.setdefault(lang, []).append(text)
            kept += score >= 0.5
        for lang, group in by_lang.items():  # cc_net normalize, SentencePiece, KenLM
            model = models[lang]
            for pieces in model.sp.Encode([normalize(t) for t in group], out_type=str):
                model.lm.score(" ".join(pieces), bos=True, eos=True)
        docs += len(texts)
    return docs, kept


def run_kernels(crawl: str, lm_dir: str, cpus: int) -> dict:
    import multiprocessing

    shards = sorted(str(p) for p in Path(crawl).glob("*.parquet"))
    shares = [shards[i::cpus] for i in range(cpus)]
    barrier = time.time() + 8  # models load before it
    with multiprocessing.get_context("spawn").Pool(cpus) as pool:
        results = pool.map(_kernel_worker, [(s, lm_dir, barrier) for s in shares])
        seconds = time.time() - barrier
    return {"docs": sum(d for d, _ in results), "seconds": seconds}


def run_datatrove(crawl: str, out: str, lm_dir: str, cpus: int, cutoffs: dict) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    from bench.peers import DatatroveCCNetTail, datatrove_lid176

    shards = len(list(Path(crawl).glob("*.parquet")))
    start = time.perf_counter()
    executor = LocalPipelineExecutor(
        pipeline=[ParquetReader(crawl, glob_pattern="*.parquet", text_key="text", id_key="id"),
                  datatrove_lid176(0.5),
                  DatatroveCCNetTail(lm_dir, cutoffs),
                  ParquetWriter(out)],
        tasks=shards, workers=cpus, logging_dir=out + "-logs")
    executor.run()
    seconds = time.perf_counter() - start
    return {"docs": None, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(ROOT / "data/demo-crawl"))
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    parser.add_argument("--lm-dir", default=str(ROOT / "models-data/ccnet"))
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        side, crawl, out, cutoffs = args.child[0], args.child[1], args.child[2], args.child[3:]
        if side == "thresher":
            result = run_thresher(crawl, out, args.lm_dir, args.num_cpus)
        elif side == "kernels":
            result = run_kernels(crawl, args.lm_dir, args.num_cpus)
        else:
            result = run_datatrove(crawl, out, args.lm_dir, args.num_cpus, json.loads(cutoffs[0]))
        print(json.dumps(result))
        return

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    rows = []
    with tempfile.TemporaryDirectory(prefix="thresher-bench-") as work:
        work = Path(work)
        for copies in args.copies:
            crawl = str(copies_of(Path(args.input), copies, work))

            def child(side, *extra):
                out = str(work / f"{side}-{copies}x")
                return measure_child([sys.executable, __file__, "--num-cpus", str(args.num_cpus),
                                      "--lm-dir", args.lm_dir, "--child", side, crawl, out,
                                      *extra], f"{side} {copies}x")

            ours = child("thresher")
            calibration = json.loads((work / f"thresher-{copies}x" / "calibration.json").read_text())
            cutoffs = json.dumps(calibration["ccnet"]["values"]["cutoffs"])
            kernels = child("kernels")
            peer = child("datatrove", cutoffs)
            rows.append((copies, ours, kernels, peer))
    print(f"\nlang + ccnet on {args.input} x copies, {args.num_cpus} cores\n")
    print("| copies | docs | thresher whole s | thresher stream s | stream docs/s | kernels "
          "docs/s | stream / kernels | datatrove s | thresher / datatrove speed | "
          "thresher RSS MB | datatrove RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for copies, ours, kernels, peer in rows:
        stream = ours["phases"]["stream"]
        stream_rate = ours["docs"] / stream
        kernel_rate = kernels["docs"] / kernels["seconds"]
        print(f"| {copies}x | {ours['docs']:,} | {ours['seconds']:.1f} | {stream:.1f} | "
              f"{stream_rate:,.0f} | {kernel_rate:,.0f} | {stream_rate / kernel_rate:.0%} | "
              f"{peer['seconds']:.1f} | {peer['seconds'] / ours['seconds']:.2f}x | "
              f"{ours['peak_rss_mb']:,.0f} | {peer['peak_rss_mb']:,.0f} |")
    print("\nthresher phases (s):")
    for copies, ours, _, _ in rows:
        print(f"  {copies}x: " + ", ".join(f"{k} {v:.1f}" for k, v in ours["phases"].items()))


if __name__ == "__main__":
    main()
