"""Document length: characters, words, lines and mean word length as columns, for
every report and for filter rules (`length_words >= 50`). Words are runs of
non-whitespace characters and lines are what `str.splitlines` gives, so the counts
are Python's own and need no model."""

from __future__ import annotations

import pyarrow as pa

from thresher.stages.base import Resources, Stage


class Length(Stage):
    name = "length"
    columns = {"length_chars": pa.int64(), "length_words": pa.int64(),
               "length_lines": pa.int64(), "length_mean_word": pa.float32()}
    default_resources = Resources(batch_size=2048)

    def __call__(self, batch: pa.Table) -> pa.Table:
        counts = [_count(text or "") for text in batch.column("text").to_pylist()]
        for (column, typ), values in zip(self.columns.items(), zip(*counts) if counts
                                         else ([],) * len(self.columns)):
            batch = batch.append_column(column, pa.array(values, typ))
        return batch


def _count(text: str) -> tuple[int, int, int, float | None]:
    words = text.split()
    letters = sum(map(len, words))
    return len(text), len(words), len(text.splitlines()), letters / len(words) if words else None
