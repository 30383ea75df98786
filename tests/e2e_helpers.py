"""What the end-to-end tests check after a run: every input row exactly once."""

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from thresher.pipeline.io import storage
from thresher.pipeline.io.storage import Store
from thresher.pipeline.engine.write import is_made_part


def output_rows(out: Path | str) -> dict[str, Counter]:
    """(source_shard, source_row) -> how many times it appears, per outcome.
    Quarantine rows standing for several lost rows count for each of them."""
    store = Store.at(str(out))
    seen: dict[str, Counter] = {}
    for outcome in ("curated", "rejected", "quarantine"):
        counter = seen.setdefault(outcome, Counter())
        for part in store.files(outcome, "part-*.parquet"):
            if is_made_part(part):  # WRAP's synthetic rows: not input rows
                continue
            cols = ["source_shard", "source_row"] + (["rows"] if outcome == "quarantine" else [])
            for row in store.read_table(part, columns=cols).to_pylist():
                for offset in range(row.get("rows", 1)):
                    counter[(row["source_shard"], row["source_row"] + offset)] += 1
    return seen


def assert_each_row_once(out: Path | str, shards: list[Path | str]) -> None:
    """Shards are local paths or URIs (as the run was given them)."""
    seen = output_rows(out)
    everything = sum(seen.values(), Counter())
    expected = {(_location(p), i) for p in shards for i in range(_num_rows(p))}
    duplicated = [k for k, n in everything.items() if n > 1]
    assert not duplicated, f"rows written twice: {duplicated[:5]}"
    assert set(everything) == expected, (
        f"missing {sorted(expected - set(everything))[:5]}, "
        f"unexpected {sorted(set(everything) - expected)[:5]}")


def _location(shard: Path | str) -> str:
    return shard if isinstance(shard, str) and storage.is_uri(shard) else str(Path(shard).resolve())


def _num_rows(shard: Path | str) -> int:
    with storage.open_input(str(shard)) as handle:
        return pq.read_metadata(handle).num_rows
