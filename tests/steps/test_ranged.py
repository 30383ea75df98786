"""The sorted runs that hold the key and URL indexes (pipeline/steps/dedup/ranged.py):
ranges written at one level are read at any other, dead shards' rows are skipped,
compaction keeps every live row once and can be repeated."""

import numpy as np
import pyarrow as pa

from thresher.pipeline.io.storage import Store
from thresher.pipeline.steps.dedup import ranged

ROOT = "dedup/keys"


def rows(n: int, seed: int, numbers=(1, 2, 3)) -> pa.Table:
    rng = np.random.default_rng(seed)
    key = rng.integers(1, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2) \
        + rng.integers(0, 2, n).astype(np.uint64)
    uid = (rng.choice(numbers, n).astype(np.int64) << 32) | np.arange(n)
    return pa.table({"key": key, "uid": uid})


def write_at(store: Store, table: pa.Table, level: int, name: str) -> None:
    at = ranged.range_of(table.column("key").to_numpy(), level)
    for r in np.unique(at):
        ranged.write(store, ROOT, level, int(r), name, table.filter(pa.array(at == r)), "key")


def test_a_range_reads_exactly_its_keys_whatever_level_wrote_them(tmp_path):
    store = Store.at(str(tmp_path))
    first, second = rows(3000, 1), rows(2000, 2)
    write_at(store, first, 2, "run-1")
    write_at(store, second, 6, "run-2")
    everything = pa.concat_tables([first, second])
    key, uid = everything.column("key").to_numpy(), everything.column("uid").to_numpy()
    live = np.array([1, 3], np.int64)
    wanted = np.sort(key[::3])
    written = ranged.levels(store, ROOT)
    assert written == [2, 6]
    seen = []
    for at in range(2 ** 4):
        files = ranged.overlapping(store, ROOT, 4, at, written)
        table = ranged.read(store, files, "key", wanted, live, 4, at)
        if table is not None:
            assert (ranged.range_of(table.column("key").to_numpy(), 4) == at).all()
            seen.append(table)
    got = pa.concat_tables(seen)
    expected = np.isin(key, wanted) & np.isin(uid >> 32, live)
    assert sorted(got.column("uid").to_pylist()) == sorted(uid[expected].tolist())


def test_compaction_keeps_live_rows_once_and_can_be_repeated(tmp_path):
    store = Store.at(str(tmp_path))
    parts = [rows(400, seed, numbers=(1, 2)) for seed in range(ranged.COMPACT_AT)]
    parts = [p.filter(pa.array(ranged.range_of(p.column("key").to_numpy(), 1) == 0))
             for p in parts]  # the lower half of the key space: range 0 of level 1
    for i, part in enumerate(parts):
        ranged.write(store, ROOT, 1, 0, f"run-{i}", part, "key")
    ranged.write(store, ROOT, 1, 0, "run-0b", parts[0], "key")  # the same rows again
    live = np.array([2], np.int64)
    ranged.compact(store, ROOT, 1, 0, "run-9", "key", ["key", "uid"], live)
    files = store.files(ranged.folder(ROOT, 1, 0), "*.parquet")
    assert [f.rsplit("/", 1)[-1] for f in files] == ["run-9.base.parquet"]
    every = pa.concat_tables(parts)
    alive = every.filter(pa.array(every.column("uid").to_numpy() >> 32 == 2))
    expected = sorted(set(zip(alive.column("key").to_pylist(), alive.column("uid").to_pylist())))
    base = store.read_table(files[0])
    assert list(zip(base.column("key").to_pylist(), base.column("uid").to_pylist())) == expected
    # A retried task compacts again: below COMPACT_AT files it leaves them as they are.
    ranged.compact(store, ROOT, 1, 0, "run-9", "key", ["key", "uid"], live)
    assert store.read_table(files[0]).equals(base)


def test_the_latest_runs_row_wins_whatever_file_holds_it():
    table = pa.table({"url": np.array([5, 5, 5, 7], np.uint64), "uid": [1, 1, 2, 3],
                      "kept": [True, False, True, True],
                      "run": ["2026-02", "2026-03", "2026-01", "2026-01"]})
    latest = ranged.latest(table.take([1, 0, 3, 2]), ["uid"], version="run")
    assert sorted(zip(latest.column("uid").to_pylist(), latest.column("kept").to_pylist())) == \
        [(1, False), (2, True), (3, True)]
