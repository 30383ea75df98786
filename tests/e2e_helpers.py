"""What the end-to-end tests check after a run: every input row exactly once."""

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq


def output_rows(out: Path) -> dict[str, Counter]:
    """(source_shard, source_row) -> how many times it appears, per outcome.
    Quarantine rows standing for several lost rows count for each of them."""
    seen: dict[str, Counter] = {}
    for outcome in ("curated", "rejected", "quarantine"):
        counter = seen.setdefault(outcome, Counter())
        for part in sorted((out / outcome).glob("part-*.parquet")):
            if "-syn" in part.name:  # WRAP's synthetic rows: not input rows
                continue
            cols = ["source_shard", "source_row"] + (["rows"] if outcome == "quarantine" else [])
            for row in pq.read_table(part, columns=cols).to_pylist():
                for offset in range(row.get("rows", 1)):
                    counter[(row["source_shard"], row["source_row"] + offset)] += 1
    return seen


def assert_each_row_once(out: Path, shards: list[Path]) -> None:
    seen = output_rows(out)
    everything = sum(seen.values(), Counter())
    expected = {(str(p.resolve()), i) for p in shards for i in range(pq.read_metadata(p).num_rows)}
    duplicated = [k for k, n in everything.items() if n > 1]
    assert not duplicated, f"rows written twice: {duplicated[:5]}"
    assert set(everything) == expected, (
        f"missing {sorted(expected - set(everything))[:5]}, "
        f"unexpected {sorted(set(everything) - expected)[:5]}")
