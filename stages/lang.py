"""Language identification with fastText lid.176 (DESIGN.md 4, `lang`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa

from thresher.models.langid import FastTextLID
from thresher.models.registry import resolve
from thresher.stages.base import Chart, Resources, Stage, present


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

    def charts(self, curated: pa.Table, rejected: pa.Table, manifest: dict) -> list[Chart]:
        title = "documents per language (top 25)"
        kept, dropped = (Counter(present(t, "lang")) for t in (curated, rejected))
        if not kept and not dropped:
            return [Chart(title, why_not="`lang` is null on every sampled row")]
        langs = [lang for lang, _ in (kept + dropped).most_common(25)]
        return [Chart(title, langs, {"curated": [kept[x] for x in langs],
                                     "rejected": [dropped[x] for x in langs]})]
