"""Decontamination throughput: the decont stage against datatrove's NGramsDecontFilter,
the same work on the same documents, one core each.

  python bench/decont_throughput.py [--input data/demo-crawl] [--docs 20000]

Both sides use the same HumanEval index (164 items, built by datatrove's own
NGramsDecontIndexer.compute_hashes: 13-grams, xxhash-64, written in datatrove's index
format for its filter), the same simplify_text and the same spaCy word tokenizer; index
loading is outside the clock on both sides. thresher: the stage called on Arrow
batches of 256 documents; datatrove: its filter's filter() on each Document, as its
BaseFilter calls it. Reported: MB of text per second on one core, and the documents
each side flags (they must be the same).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(ROOT / "data" / "demo-crawl"))
    parser.add_argument("--docs", type=int, default=20000)
    args = parser.parse_args()
    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter

    from thresher.stages.decont import Decontamination

    docs = pa.concat_tables([pq.read_table(p, columns=["id", "text"])
                             for p in sorted(Path(args.input).glob("*.parquet"))])
    docs = docs.slice(0, args.docs)
    megabytes = sum(len(t.encode()) for t in docs.column("text").to_pylist()) / 1e6
    work = Path(tempfile.mkdtemp(prefix="thresher-decont-bench-"))
    values = Decontamination(benchmarks=["humaneval"]).calibrate(pa.table({}), work)
    stage = Decontamination(benchmarks=["humaneval"], **values).ready()
    hashes = pq.read_table(values["index"]).column("hash").to_pylist()
    np.array(sorted(set(hashes)), dtype="<u8").tofile(work / "humaneval.index.hashes")
    peer = NGramsDecontFilter(index_folder=str(work), config=NGramsDecontConfig(n_grams=13))
    peer.load_index_hashes()

    start = time.perf_counter()
    ours = set()
    for i in range(0, docs.num_rows, 256):
        out = stage(docs.slice(i, 256))
        ours |= {d for d, hit in zip(out.column("id").to_pylist(),
                                     out.column("decont_contaminated").to_pylist()) if hit}
    thresher_s = time.perf_counter() - start

    start = time.perf_counter()
    theirs = {row["id"] for row in docs.to_pylist()
              if peer.filter(Document(text=row["text"], id=row["id"])) is not True}
    datatrove_s = time.perf_counter() - start

    print(f"\ndecont on {docs.num_rows:,} demo documents ({megabytes:.1f} MB), one core, "
          "HumanEval index\n")
    print("| side | seconds | MB/s/core | documents flagged |")
    print("|---|---|---|---|")
    print(f"| thresher decont | {thresher_s:.1f} | {megabytes / thresher_s:.2f} | {len(ours)} |")
    print(f"| datatrove NGramsDecontFilter | {datatrove_s:.1f} | {megabytes / datatrove_s:.2f} "
          f"| {len(theirs)} |")
    print(f"\nsame documents flagged: {ours == theirs}")


if __name__ == "__main__":
    main()
