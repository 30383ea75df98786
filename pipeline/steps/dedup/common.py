"""What the dedup phases share: where the index lives, the row schemas that cross the
shuffles, and the small helpers every phase uses."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.models.minhash import _finalize
from thresher.pipeline.engine.config import ConfigError
from thresher.pipeline.io.storage import Store

SIGNATURES = "dedup/signatures"  # <shard folder>/<first row>.parquet: a document's keys
CLUSTERS = "dedup/clusters"      # <shard folder>/<run>.parquet: content decisions
URLS = "dedup/urls"              # <shard folder>/<run>.parquet: URL decisions
KEYS = "dedup/keys"              # the key index: (key, uid) by key range (ranged.py)
URL_INDEX = "dedup/url-index"    # the URL index: documents by URL key range (urls.py)
INDEX_FILE = "dedup/index.json"  # documents per shard folder, for plan and status
FORMAT_FILE = "dedup/format.json"  # the index's format version and key settings
KEY_ROWS_PER_PARTITION = 4_000_000  # about 130 MB of key rows per shuffle partition
FILE_ROWS = 500_000  # signatures a worker holds before writing them (about 90 MB)
NONE = -1  # no uid: an earlier document in no cluster has no kept document but itself

KEY_SCHEMA = pa.schema([("bucket", pa.int64()), ("key", pa.uint64()), ("uid", pa.int64()),
                        ("store", pa.bool_())])  # store: the row joins the key index
EDGE_SCHEMA = pa.schema([("bucket", pa.int64()), ("a", pa.int64()), ("b", pa.int64())])
_REP_SALT = np.uint64(0x5DEECE66D2545F49)


class DedupError(ConfigError):
    """The dedup step cannot run as configured, or its index is not this version's."""


def bucket(values: np.ndarray, buckets: int) -> np.ndarray:
    """The shuffle bucket of a key or a uid (a hash, so that buckets are even)."""
    return (_finalize(np.asarray(values).astype(np.uint64)) % np.uint64(buckets)).astype(np.int64)


def rep_key(rep: np.ndarray) -> np.ndarray:
    """The key that every member of the cluster kept as `rep` shares: with it, a cluster
    whose kept document left comes into the graph whole."""
    return _finalize(np.asarray(rep).astype(np.uint64) ^ _REP_SALT)


def id_rank(ids: list[str]) -> np.ndarray:
    """The tie-break of the keep rule: a hash of each id (lowest first)."""
    return np.array([int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "big")
                     for i in ids], np.uint64)


def units(items: list[dict], cpus: int):
    """Per-shard work items as a dataset of a few blocks per CPU: one task reads many
    small index files, not one task each."""
    import ray

    return ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * cpus)))


def read_folder(store: Store, folder: str, columns: list[str]) -> pa.Table | None:
    """A shard's signature entries, sorted by uid."""
    files = sorted(store.files(folder, "*.parquet"))
    if not files:
        return None
    return pa.concat_tables(store.read_table(f, columns=columns) for f in files).sort_by("uid")


def read_latest(store: Store, folder: str, columns: list[str]) -> pa.Table | None:
    """A shard's decisions, one row per uid: a later run's decision replaces an earlier
    one (the files are named by run, and run ids sort by time)."""
    files = sorted(store.files(folder, "*.parquet"))
    if not files:
        return None
    columns = list(dict.fromkeys(["uid", *columns]))
    tables = []
    for i, path in enumerate(files):
        part = store.read_table(path, columns=columns)
        tables.append(part.append_column("_file", pa.array(np.full(part.num_rows, i))))
    table = pa.concat_tables(tables)
    order = np.lexsort((-table.column("_file").to_numpy(), table.column("uid").to_numpy()))
    uid = table.column("uid").to_numpy()[order]
    first = np.r_[True, uid[1:] != uid[:-1]] if len(uid) else np.zeros(0, bool)
    return table.take(order[first]).drop_columns(["_file"])


SMALL_SHUFFLE_ROWS = 20_000_000  # below this, a shuffle runs as tasks (see on_tasks)


def on_tasks(dataset):
    """The dataset with a context of its own in which shuffles run as tasks (Ray Data's
    sort-based pull shuffle); every dataset made from it inherits that. The default
    hash shuffle starts its aggregator actors anew for every shuffle: about 7 s each on
    2 cores, against 0.2 s for a small shuffle as tasks, and the step has a dozen
    shuffles. Only for small data: the hash shuffle is the one that scales to a
    cluster's worth of key rows."""
    from ray.data import Dataset
    from ray.data.context import ShuffleStrategy

    dataset = Dataset.copy(dataset, _deep_copy=True)
    dataset.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    return dataset


@contextmanager
def shuffles_as_tasks(small: bool):
    """Within it, new datasets shuffle as tasks when `small` (see on_tasks): a dataset
    takes a copy of the current context when it is made."""
    from ray.data.context import DataContext, ShuffleStrategy

    context = DataContext.get_current()
    before = context.shuffle_strategy
    if small:
        context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    try:
        yield
    finally:
        context.shuffle_strategy = before


def col(name: str):
    from ray.data.expressions import col as column

    return column(name)


def count_true(table: pa.Table, column: str) -> int:
    return int(pc.sum(table.column(column)).as_py() or 0)
