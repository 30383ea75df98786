"""Language identification with fastText lid.176 (DESIGN.md 4, `lang`)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from thresher.models.langid import FastTextLID
from thresher.models.registry import resolve
from thresher.stages.base import Resources, Stage


class LanguageID(Stage):
    name = "lang"
    columns = {"lang": pa.string(), "lang_score": pa.float32()}
    default_resources = Resources(batch_size=512)

    def __init__(self, model: str = "lid176", resources: Resources | None = None):
        super().__init__(resources)
        # Resolved on the driver so that a missing file fails the config, not a worker.
        self.model_path = resolve(model)
        self._lid: FastTextLID | None = None

    def model_files(self) -> list[Path]:
        return [Path(self.model_path)]

    def setup(self) -> None:
        self._lid = FastTextLID(self.model_path)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self._lid is None:
            self.setup()
        langs, scores = self._lid.predict(batch.column("text").to_pylist())
        batch = batch.append_column("lang", pa.array(langs, pa.string()))
        return batch.append_column("lang_score", pa.array(scores, pa.float32()))
