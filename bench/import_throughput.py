"""WARC import throughput: `thresher import` vs datatrove doing the same work.

  python bench/import_throughput.py [--pages 1500] [--workers 2]

The WARC is written here with warcio from real HTML pages on this disk (the Debian
Administrator's Handbook and the Python docs, from Debian packages), split into as many
files as workers. Both sides read the same files, extract main text with trafilatura
(datatrove's `Trafilatura` extractor, same settings, 5 s timeout) and write zstd
Parquet:
  datatrove  LocalPipelineExecutor([WarcReader, Trafilatura, ParquetWriter]), one task
             per file, `workers` processes
  thresher   import_files("warc", ...): `workers` processes, one per file
Each side runs in its own child process; peak RSS is the largest sum over the child and
its descendants, sampled every 0.1 s.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.child import measure_child  # noqa: E402

HTML_ROOTS = ["/usr/share/doc/debian-handbook/html", "/usr/share/doc/python3.11/html"]


def build_warcs(folder: Path, pages: int, files: int) -> int:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    found = sorted(p for root in HTML_ROOTS for p in Path(root).rglob("*.html"))[:pages]
    if not found:
        raise SystemExit(f"no HTML pages under {HTML_ROOTS}: run `make setup` first")
    folder.mkdir(parents=True, exist_ok=True)
    handles = [open(folder / f"bench-{i}.warc.gz", "wb") for i in range(files)]
    writers = [WARCWriter(h, gzip=True) for h in handles]
    for i, page in enumerate(found):
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")],
                                protocol="HTTP/1.1")
        writers[i % files].write_record(writers[i % files].create_warc_record(
            f"https://docs.example.invalid/{page.relative_to('/usr/share/doc')}", "response",
            payload=io.BytesIO(page.read_bytes()), http_headers=http,
            # as in Common Crawl's WARCs (datatrove skips records without it unless
            # libmagic calls the page HTML; these XHTML pages it calls text/xml)
            warc_headers_dict={"WARC-Identified-Payload-Type": "text/html"}))
    for handle in handles:
        handle.close()
    return len(found)


def run_thresher(warcs: str, out: str, workers: int) -> dict:
    from thresher.pipeline.io.importers import import_files

    start = time.perf_counter()
    summary = import_files("warc", [warcs], out, workers=workers, extract_timeout=5.0)
    return {"seconds": time.perf_counter() - start, "rows": summary["rows"],
            "with_text": _rows_with_text(out)}


def run_datatrove(warcs: str, out: str, workers: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import ParquetWriter

    files = len(list(Path(warcs).glob("*.warc.gz")))
    start = time.perf_counter()
    LocalPipelineExecutor(
        pipeline=[WarcReader(warcs, glob_pattern="*.warc.gz"), Trafilatura(timeout=5.0),
                  ParquetWriter(out, compression="zstd")],
        tasks=files, workers=workers, logging_dir=f"{out}/_logs", skip_completed=False).run()
    return {"seconds": time.perf_counter() - start, "rows": _rows_with_text(out),
            "with_text": _rows_with_text(out)}


def _rows_with_text(out: str) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    total = 0
    for part in Path(out).glob("*.parquet"):
        text = pq.read_table(part, columns=["text"]).column("text")
        total += pc.sum(pc.greater(pc.utf8_length(pc.fill_null(text, "")), 0)).as_py() or 0
    return total


def measure(mode: str, args, warcs: str) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--warcs", warcs,
               "--workers", str(args.workers)]
    return measure_child(command, mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1500)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--child", choices=["thresher", "datatrove"])
    parser.add_argument("--warcs")
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as out:
            run = run_thresher if args.child == "thresher" else run_datatrove
            print(json.dumps(run(args.warcs, out, args.workers)))
        return

    with tempfile.TemporaryDirectory() as scratch:
        warcs = Path(scratch) / "warcs"
        pages = build_warcs(warcs, args.pages, args.workers)
        mb = sum(p.stat().st_size for p in warcs.iterdir()) / 1e6
        rows = {mode: measure(mode, args, str(warcs)) for mode in ("datatrove", "thresher")}
    print(f"\nWARC import: {pages:,} HTML pages in {args.workers} WARC files ({mb:.1f} MB "
          f"gzipped), {args.workers} worker processes\n")
    print(f"| {'pipeline':<46} | {'rows':>6} | {'with text':>9} | {'wall s':>7} | "
          f"{'pages/s':>7} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 48}|{'-' * 8}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 13}|")
    names = {"datatrove": "datatrove WarcReader+Trafilatura+ParquetWriter",
             "thresher": "thresher import (warcio + same extractor)"}
    for mode, r in rows.items():
        print(f"| {names[mode]:<46} | {r['rows']:>6,} | {r['with_text']:>9,} | "
              f"{r['seconds']:>7.1f} | {pages / r['seconds']:>7.1f} | {r['peak_rss_mb']:>11,.0f} |")
    ratio = rows["thresher"]["seconds"] / rows["datatrove"]["seconds"]
    print(f"\nthresher / datatrove wall time: {ratio:.2f}x. datatrove drops pages without "
          "main text; thresher keeps them as empty rows with a note (rows - with text).")


if __name__ == "__main__":
    main()
