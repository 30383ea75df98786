"""Read input shards into Arrow batches that carry their provenance and triage.

Runs inside Ray tasks (one shard per call, streamed row group by row group). Each
batch gains:
  source_shard, source_row   where the row came from (kept in every output)
  id                         given, or a content hash of `text` when absent
  _shard                     the shard's output key (internal)
  _count                     input rows the row stands for: 1, or the size of an
                             unreadable row group recorded as one quarantine row
  _error                     why the row is quarantined (null text, bad UTF-8, ...)
  _pre                       a drop reason decided before scoring (empty_text, ...)
Stages see only rows whose _error and _pre are null.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from thresher.pipeline.io import storage

INTERNAL = ("_shard", "_count", "_error", "_pre")


def read_units(batch: pa.Table, *, batch_rows: int, max_text_bytes: int) -> Iterator[pa.Table]:
    """Ray map_batches UDF: a batch of read units -> their rows."""
    for unit in batch.to_pylist():
        yield from read_unit(unit, batch_rows=batch_rows, max_text_bytes=max_text_bytes)


def read_unit(unit: dict, *, batch_rows: int, max_text_bytes: int) -> Iterator[pa.Table]:
    """The rows a read unit names: {path, key}, and for a sample also `row_groups`
    (which ones to read) and `rate` (the share of their rows to keep, by a hash);
    `columns` (optional) reads only those columns (and `text` and `id`)."""
    rows = read_shard(unit["path"], unit["key"], batch_rows=batch_rows,
                      max_text_bytes=max_text_bytes, row_groups=unit.get("row_groups"),
                      columns=unit.get("columns"))
    rate = unit.get("rate")
    if rate is None or rate >= 1:
        yield from rows
        return
    for table in rows:
        keep = [sample_hash(unit["key"], r) < rate for r in table.column("source_row").to_pylist()]
        yield table.filter(pa.array(keep, pa.bool_()))


def sample_hash(key: str, row: int) -> float:
    """A row's place in [0, 1) for sampling: stable across runs, spread over shards."""
    digest = hashlib.blake2b(f"{key}:{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def read_shard(path: str, key: str, *, batch_rows: int, max_text_bytes: int,
               row_groups: list[int] | None = None,
               columns: list[str] | None = None) -> Iterator[pa.Table]:
    with storage.open_input(path) as handle:
        yield from _read_groups(pq.ParquetFile(handle), path, key, batch_rows, max_text_bytes,
                                row_groups, columns)


def _read_groups(parquet: pq.ParquetFile, path: str, key: str, batch_rows: int,
                 max_text_bytes: int, wanted: list[int] | None = None,
                 columns: list[str] | None = None) -> Iterator[pa.Table]:
    seen_ids: set[str] = set()
    if columns is not None:  # Parquet is columnar: the others are not even fetched
        present = parquet.schema_arrow.names
        columns = [c for c in present if c in {"text", "id", *columns}]
    meta = parquet.metadata
    starts = [0]
    for group in range(meta.num_row_groups):
        starts.append(starts[-1] + meta.row_group(group).num_rows)
    for group in range(meta.num_row_groups) if wanted is None else sorted(wanted):
        row, group_end = starts[group], starts[group + 1]
        batches = parquet.iter_batches(batch_size=batch_rows, row_groups=[group],
                                       columns=columns)
        while True:
            # Only the decoding is guarded: an error in triage is a bug, not bad data.
            try:
                record_batch = next(batches, None)
            except (OSError, pa.ArrowException) as err:  # a corrupt page: go on with the rest
                detail = " ".join(str(err).split())
                message = (f"row group {group} unreadable from row {row}: "
                           f"{type(err).__name__}: {detail}")
                yield lost_rows(parquet.schema_arrow, path, key, row, group_end - row, message)
                break
            if record_batch is None:
                break
            table = pa.Table.from_batches([record_batch])
            yield triage(table, path, key, row, seen_ids, max_text_bytes)
            row += table.num_rows


def triage(table: pa.Table, path: str, key: str, first_row: int, seen_ids: set[str],
           max_text_bytes: int) -> pa.Table:
    n = table.num_rows
    texts, errors = _text_as_string(table.column("text"))
    errors = [e if e else (None if t is not None else "text is null")
              for t, e in zip(texts.to_pylist(), errors)]
    table = table.set_column(table.schema.get_field_index("text"), "text", texts)

    ids = _ids(table, texts)
    pre: list[str | None] = [None] * n
    nbytes = pc.fill_null(pc.binary_length(texts), 0).to_pylist()
    blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(texts), ""), False).to_pylist()
    for i, doc_id in enumerate(ids):
        if errors[i]:
            continue
        if doc_id in seen_ids:
            pre[i] = "duplicate_id"
        elif blank[i]:
            pre[i] = "empty_text"
        elif nbytes[i] > max_text_bytes:
            pre[i] = "too_long"
        seen_ids.add(doc_id)

    columns = {
        "id": pa.array(ids, pa.string()),
        "source_shard": pa.array([path] * n, pa.string()),
        "source_row": pa.array(range(first_row, first_row + n), pa.int64()),
        "_shard": pa.array([key] * n, pa.string()),
        "_count": pa.array([1] * n, pa.int64()),
        "_error": pa.array(errors, pa.string()),
        "_pre": pa.array(pre, pa.string()),
    }
    for name, values in columns.items():
        if name in table.column_names:
            table = table.set_column(table.schema.get_field_index(name), name, values)
        else:
            table = table.append_column(name, values)
    return table


def lost_rows(schema: pa.Schema, path: str, key: str, first_row: int, count: int,
              message: str) -> pa.Table:
    """One quarantine row standing for `count` input rows that could not be read."""
    table = pa.table({f.name: pa.nulls(1, f.type) for f in schema if f.name != "text"})
    table = table.append_column("text", pa.nulls(1, pa.string()))
    values = {"id": pa.nulls(1, pa.string()), "source_shard": pa.array([path]),
              "source_row": pa.array([first_row], pa.int64()), "_shard": pa.array([key]),
              "_count": pa.array([count], pa.int64()), "_error": pa.array([message]),
              "_pre": pa.nulls(1, pa.string())}
    for name, value in values.items():
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, value)
    return table


def _text_as_string(column: pa.ChunkedArray) -> tuple[pa.Array, list[str | None]]:
    """The text column as UTF-8 strings; rows that are not valid UTF-8 become null
    with an error, instead of failing the batch."""
    column = column.combine_chunks()
    if pa.types.is_large_string(column.type) or pa.types.is_large_binary(column.type):
        target = pa.large_string()
    else:
        target = pa.string()
    try:
        as_text = column.cast(target)
        as_text.validate(full=True)
        return as_text, [None] * len(column)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    raw = column.cast(pa.large_binary() if target == pa.large_string() else pa.binary())
    values, errors = [], []
    for value in raw.to_pylist():
        try:
            values.append(None if value is None else value.decode("utf-8"))
            errors.append(None)
        except UnicodeDecodeError as err:
            values.append(None)
            errors.append(f"text is not valid UTF-8 ({err.reason} at byte {err.start})")
    return pa.array(values, target), errors


def _ids(table: pa.Table, texts: pa.Array) -> list[str]:
    """Given ids where present, else a hash of the text (stable across runs)."""
    given = (table.column("id").cast(pa.string()).to_pylist()
             if "id" in table.column_names else [None] * table.num_rows)
    return [doc_id if doc_id is not None else content_id(text)
            for doc_id, text in zip(given, texts.to_pylist())]


def content_id(text: str | None) -> str:
    return hashlib.sha1((text or "").encode("utf-8")).hexdigest()[:20]
