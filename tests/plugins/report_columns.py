"""A test-only stage, named in configs as `report_columns:ToyFilter`, that adds columns
of the kinds the run report must handle: a filter's pass flag and its reason (as the
heuristics stage's `heuristics_<f>` and `heuristics_<f>_reason`), and a score that no
row gets (as `dataman_metric` when DataMan selection is off)."""

import pyarrow as pa

from thresher.stages.base import Resources, Stage


class ToyFilter(Stage):
    """Fails documents of fewer than `min_words` words, or that contain `marker`."""

    name = "toyfilter"
    columns = {"toyfilter_length": pa.bool_(), "toyfilter_length_reason": pa.string(),
               "toyfilter_unset": pa.float32()}
    default_resources = Resources(num_cpus=0.25, concurrency=1, batch_size=64)

    def __init__(self, min_words: int = 13, marker: str = "(3", resources=None):
        super().__init__(resources)
        self.min_words = min_words
        self.marker = marker

    def _reason(self, text: str) -> str | None:
        if len(text.split()) < self.min_words:
            return "toy_too_few_words"
        return "toy_marker_found" if self.marker in text else None

    def __call__(self, batch):
        reasons = [self._reason(text) for text in batch.column("text").to_pylist()]
        return (batch
                .append_column("toyfilter_length", pa.array([r is None for r in reasons]))
                .append_column("toyfilter_length_reason", pa.array(reasons, pa.string()))
                .append_column("toyfilter_unset", pa.nulls(batch.num_rows, pa.float32())))
