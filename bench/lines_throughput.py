"""Paragraph dedup against cc_net's own code: the same shards in the same groups, the
same lines removed, and the speed of each side on one core; then the Bloom filter's
false-positive rate on a million held-out lines.

  python bench/lines_throughput.py --ccnet SRC [--input data/demo-crawl] [--group-shards 4]

SRC is a checkout of facebookresearch/cc_net (a folder holding cc_net/, or a bare git
directory, whose HEAD is read); cc_net is not on the package registries. Its code runs
as mine.py runs it: HashesCollector over each shard (hashes written to a file), then
DuplicatesRemover over each group of `--group-shards` shards with the group's hash
files loaded. Without the C++ `getpy` package (not installable here) cc_net uses its
NaiveHashSet, a Python dict, which its docstring calls "quite fast".

thresher runs the same two phases with its own code, without Ray: the lines step's
per-shard hashing (Hasher's work: line_hashes, documents_per_hash), its count and
group file (_count_bucket, _write_group), then the stage over each shard with the
group's file. Both sides hash every line twice, once per phase. Reported: seconds and
MB/s/core per phase, and the agreement (documents whose text after dedup is the
same, documents dropped by both).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cc_net_from(source: str) -> Path:
    """A folder that holds cc_net's package, from a checkout or a bare git directory."""
    path = Path(source)
    if (path / "cc_net" / "dedup.py").exists():
        return path
    if (path / "HEAD").exists() and (path / "objects").exists():
        folder = Path(tempfile.mkdtemp(prefix="cc_net-"))
        archive = subprocess.run(["git", "--git-dir", str(path), "archive", "HEAD", "cc_net"],
                                 check=True, capture_output=True).stdout
        tarfile.open(fileobj=io.BytesIO(archive)).extractall(folder, filter="data")
        return folder
    sys.exit(f"{source}: neither a cc_net checkout nor a git directory of one; clone "
             "https://github.com/facebookresearch/cc_net and give its folder")


def run_cc_net(shards: list[pa.Table], groups: list[list[int]], work: Path):
    import logging
    import warnings

    from cc_net import dedup

    logging.disable(logging.INFO)
    warnings.filterwarnings("ignore", message="Module 'getpy' not found")
    start = time.perf_counter()
    files = []
    for n, shard in enumerate(shards):
        collector = dedup.HashesCollector("raw_content", output=work / f"{n}.bin")
        with collector:
            for text in shard.column("text").to_pylist():
                collector.do({"raw_content": text})
        collector.close()
        files.append(work / f"{n}.bin")
    hashing = time.perf_counter() - start
    start = time.perf_counter()
    kept = {}
    for group in groups:
        remover = dedup.DuplicatesRemover("raw_content", [files[n] for n in group])
        with remover:
            for n in group:
                for i, text in zip(shards[n].column("id").to_pylist(),
                                   shards[n].column("text").to_pylist()):
                    doc = remover.do({"raw_content": text})
                    kept[i] = doc["raw_content"] if doc else None
    return kept, hashing, time.perf_counter() - start


def run_thresher(shards: list[pa.Table], groups: list[list[int]], work: Path):
    from thresher.models.line_hash import documents_per_hash, line_hashes
    from thresher.pipeline.steps.lines import RUNS, _count_bucket, _write_group
    from thresher.stages.dedup import shard_folder
    from thresher.stages.lines import Lines

    start = time.perf_counter()
    rows = []
    group_of = {n: g for g, members in enumerate(groups) for n in members}
    for n, shard in enumerate(shards):
        distinct, docs = documents_per_hash([line_hashes(t) for t in
                                             shard.column("text").to_pylist() if t])
        rows.append(pa.table({"bucket": np.zeros(len(distinct), np.int64),
                              "group": np.full(len(distinct), group_of[n], np.int32),
                              "hash": distinct, "docs": np.minimum(docs, 2).astype(np.uint8),
                              "fresh": np.zeros(len(distinct), bool)}))
    for group in range(len(groups)):
        found = _count_bucket(pa.concat_tables(rows[n] for n in groups[group]), str(work),
                              None, {})
        _write_group(found, str(work), "bench")
    hashing = time.perf_counter() - start
    sets = work / RUNS / "bench"
    import json

    (sets / "groups.json").write_text(json.dumps(
        {shard_folder(f"shard-{n}"): group_of[n] for n in range(len(shards))}))
    stage = Lines(sets=str(sets)).ready()
    start = time.perf_counter()
    kept = {}
    for n, shard in enumerate(shards):
        table = shard.append_column("source_shard", pa.array([f"shard-{n}"] * shard.num_rows))
        for s in range(0, table.num_rows, 1024):
            out = stage(table.slice(s, 1024))
            for i, text, lines in zip(out.column("id").to_pylist(), out.column("text").to_pylist(),
                                      out.column("lines_kept").to_pylist()):
                kept[i] = text if lines else None
    return kept, hashing, time.perf_counter() - start


def _spelt(number: int) -> str:
    return "".join(chr(ord("a") + int(d)) for d in str(number))


def bloom_rate(shards: list[pa.Table], fp_rate: float, held: int = 1_000_000) -> tuple[float, int]:
    """Fill a filter sized for its contents with the demo's distinct lines and numbered
    ones, then test `held` numbered lines never added (numbers spelt in letters: the
    normalization turns every digit into 0)."""
    from thresher.models.bloom import BloomShape
    from thresher.models.line_hash import line_hashes

    demo = np.unique(np.concatenate([line_hashes(t) for s in shards
                                     for t in s.column("text").to_pylist()]))
    extra = max(0, 1_000_000 - len(demo))
    added = np.unique(np.concatenate([demo, line_hashes("\n".join(
        f"added line {_spelt(i)} of the filter" for i in range(extra)))]))
    tested = line_hashes("\n".join(f"held-out line {_spelt(i)}, never added" for i in range(held)))
    tested = tested[~np.isin(tested, added)]
    shape = BloomShape.sized(len(added), fp_rate)
    found = 0
    for part in range(shape.parts):
        bits = shape.empty_part()
        shape.add(bits, added[shape.part_of(added) == part])
        found += int(shape.contains(bits, tested[shape.part_of(tested) == part]).sum())
    return found / len(tested), len(added)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ccnet", required=True, help="a cc_net checkout or git directory")
    parser.add_argument("--input", default=str(ROOT / "data" / "demo-crawl"))
    parser.add_argument("--group-shards", type=int, default=4)
    args = parser.parse_args()
    sys.path.insert(0, str(cc_net_from(args.ccnet)))
    shards = [pq.read_table(p, columns=["id", "text"])
              for p in sorted(Path(args.input).glob("*.parquet"))]
    groups = [list(range(i, min(i + args.group_shards, len(shards))))
              for i in range(0, len(shards), args.group_shards)]
    mb = sum(len(t.encode()) for s in shards for t in s.column("text").to_pylist()) / 1e6
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        theirs, their_hash, their_remove = run_cc_net(shards, groups, Path(a))
        ours, our_hash, our_remove = run_thresher(shards, groups, Path(b))
    same = sum(ours[i] == theirs[i] for i in theirs)
    dropped = sum(ours[i] is None and theirs[i] is None for i in theirs)
    differ = [i for i in theirs if ours[i] != theirs[i]]
    print(f"\nparagraph dedup of {len(theirs):,} demo documents ({mb:.1f} MB) in "
          f"{len(shards)} shards, groups of {args.group_shards}, one core\n")
    print("| side | hash + group sets s | MB/s/core | remove s | MB/s/core | whole MB/s/core |")
    print("|---|---|---|---|---|---|")
    for side, h, r in (("thresher lines", our_hash, our_remove),
                       ("cc_net dedup.py", their_hash, their_remove)):
        print(f"| {side} | {h:.1f} | {mb / h:.1f} | {r:.1f} | {mb / r:.1f} | {mb / (h + r):.1f} |")
    print(f"\nsame text after dedup: {same:,} of {len(theirs):,} documents "
          f"({100 * same / len(theirs):.2f}%); dropped by both: {dropped:,}")
    for i in differ[:10]:
        print(f"  differs: {i}: thresher {ours[i]!r:.80} cc_net {theirs[i]!r:.80}")
    print("\n| Bloom target | lines added | measured on 1,000,000 held-out lines | off by |")
    print("|---|---|---|---|")
    for target in (0.01, 0.001):
        rate, added = bloom_rate(shards, target)
        print(f"| {target} | {added:,} | {rate:.5f} | {100 * (rate - target) / target:+.1f}% |")


if __name__ == "__main__":
    main()
