"""Heuristic quality filters (DESIGN.md 4): Gopher quality and repetition (Rae et al.
2021), C4 (Raffel et al. 2020) and FineWeb's, as datatrove's filter classes decide them.

Each filter's verdict becomes two columns, `heuristics_<filter>` (passed) and
`heuristics_<filter>_reason` (datatrove's reason, null when it passed); the config's
filter rules drop on them. Every filter sees the document's text as it came: C4's
filter also deletes lines from the documents it keeps, and datatrove's later filters
would see that shorter text. By default C4 only judges here; with `c4_rewrites: true`
the stage is a text transform (as FineWeb's pipeline ran C4 before its own filter):
a document C4 keeps leaves with C4's text, FineWeb's filter judges that text, and
`heuristics_removed_lines` / `heuristics_removed_chars` say what C4 took out.

Words are split per document language as datatrove does (its tokenizer for the row's
`lang`). engine `datatrove` runs datatrove's filter objects with datatrove's own
tokenizers. engine `fast` (the default) makes the same decisions faster: the filters'
rules in models/heuristic_filters.py (datatrove's parameters and arithmetic, each
document's words split once for all four) over models/words.py's tokenizer, which
splits as spaCy does, token for token, without spaCy's cost per document.
"""

from __future__ import annotations

import pyarrow as pa

from thresher.models.heuristic_filters import JUDGES, Words, c4, c4_text
from thresher.models.words import datatrove_tokenizer, word_tokenizer
from thresher.stages.base import Resources, Stage

FILTERS = ("gopher_quality", "gopher_repetition", "c4", "fineweb")
ENGINES = ("fast", "datatrove")
REWRITE_COLUMNS = {"heuristics_removed_lines": pa.int64(), "heuristics_removed_chars": pa.int64()}


def _filter_classes() -> dict:
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter,
                                            GopherQualityFilter, GopherRepetitionFilter)

    return {"gopher_quality": GopherQualityFilter, "gopher_repetition": GopherRepetitionFilter,
            "c4": C4QualityFilter, "fineweb": FineWebQualityFilter}


class HeuristicFilters(Stage):
    name = "heuristics"
    columns = {col: typ for f in FILTERS for col, typ in
               ((f"heuristics_{f}", pa.bool_()), (f"heuristics_{f}_reason", pa.string()))}
    default_resources = Resources(batch_size=256)

    def __init__(self, gopher_quality: dict | bool = True, gopher_repetition: dict | bool = True,
                 c4: dict | bool = True, fineweb: dict | bool = True, language: str = "en",
                 language_column: str | None = "lang", engine: str = "fast",
                 c4_rewrites: bool = False, resources: Resources | None = None):
        """Each filter: true (datatrove's defaults), a mapping of its datatrove
        parameters, or false (not run: its columns stay null). language: for rows
        without a `language_column` value."""
        super().__init__(resources)
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        given = {"gopher_quality": gopher_quality, "gopher_repetition": gopher_repetition,
                 "c4": c4, "fineweb": fineweb}
        self.params = {name: _params(name, value) for name, value in given.items()
                       if value is not False}
        self.language, self.language_column, self.engine = language, language_column, engine
        if c4_rewrites and "c4" not in self.params:
            raise ValueError("c4_rewrites needs the c4 filter on")
        self.c4_rewrites = self.rewrites_text = bool(c4_rewrites)
        if c4_rewrites:
            self.columns = {**self.columns, **REWRITE_COLUMNS}
        self.reads = (language_column,) if language_column else ()  # when present
        self._filters: dict[tuple[str, str], object] = {}  # built in each worker
        for name, params in self.params.items():  # a bad parameter fails the config
            _filter_classes()[name](**params)

    def memory_estimate(self) -> int:
        """spaCy's blank pipelines and the remembered chunks' tokens (two generations
        of 250,000 per language, for the few languages most rows have). On the demo
        crawl (64 languages) bench/heuristics_throughput.py's thresher side peaked
        320 MB above datatrove's, which holds the same pipelines and documents."""
        return 512 * 2**20

    def describe(self) -> dict:
        return {"engine": self.engine, "filters": self.params, "language": self.language,
                "language_column": self.language_column, "c4_rewrites": self.c4_rewrites}

    def check(self) -> None:
        pass  # parameters were checked in __init__; tokenizers load per language, in workers

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("text").to_pylist()
        languages = self._languages(batch)
        verdicts = {name: ([], []) for name in FILTERS}
        removed: tuple[list, list] = ([], [])
        fast = self.engine == "fast"
        for i, (text, language) in enumerate(zip(texts, languages)):
            # split once, for every filter
            words = Words(text, word_tokenizer(language)) if fast else None
            for name in FILTERS:
                passed, reasons = verdicts[name]
                if name not in self.params:
                    passed.append(None)
                    reasons.append(None)
                    continue
                if name == "c4" and self.c4_rewrites:
                    reason, new = self._c4_rewrite(text, language, words)
                    if reason is None and new != text:  # the later filters judge C4's text
                        removed[0].append(_lines(text) - _lines(new))
                        removed[1].append(len(text) - len(new))
                        texts[i] = text = new
                        words = Words(text, word_tokenizer(language)) if fast else None
                    else:
                        removed[0].append(0 if reason is None else None)
                        removed[1].append(0 if reason is None else None)
                else:
                    reason = self.judge(name, text, language, words)
                passed.append(reason is None)
                reasons.append(reason)
        for name in FILTERS:
            passed, reasons = verdicts[name]
            batch = batch.append_column(f"heuristics_{name}", pa.array(passed, pa.bool_()))
            batch = batch.append_column(f"heuristics_{name}_reason", pa.array(reasons, pa.string()))
        if self.c4_rewrites:
            batch = batch.set_column(batch.schema.get_field_index("text"), "text",
                                     pa.array(texts, batch.schema.field("text").type))
            for column, values in zip(REWRITE_COLUMNS, removed):
                batch = batch.append_column(column, pa.array(values, pa.int64()))
        return batch

    def _c4_rewrite(self, text: str, language: str, words: Words | None) -> tuple:
        """C4's verdict and, when it keeps the document, the text it leaves."""
        from datatrove.data import Document

        f = self._filter("c4", language)
        if self.engine == "fast":
            kept: list[str] = []
            reason = c4(f, text, words, kept)
            return reason, (c4_text(f, kept) if reason is None else text)
        doc = Document(text=text, id="")
        result = f.filter(doc)
        if result is True:
            return None, doc.text
        return (result[1] if isinstance(result, tuple) else "c4"), text

    def judge(self, name: str, text: str, language: str,
              words: Words | None = None) -> str | None:
        """datatrove's reason for dropping text by filter `name`, or None if it passes."""
        from datatrove.data import Document

        if self.engine == "fast":
            words = words or Words(text, word_tokenizer(language))
            return JUDGES[name](self._filter(name, language), text, words)
        result = self._filter(name, language).filter(Document(text=text, id=""))
        if result is True:
            return None
        if result is False:
            return name
        return result[1]

    def _languages(self, batch: pa.Table) -> list[str]:
        if self.language_column and self.language_column in batch.column_names:
            return [lang or self.language for lang in
                    batch.column(self.language_column).to_pylist()]
        return [self.language] * batch.num_rows

    def _filter(self, name: str, language: str):
        key = (name, language)
        if key not in self._filters:
            tokenizer = word_tokenizer(language) if self.engine == "fast" else \
                datatrove_tokenizer(language)
            self._filters[key] = _filter_classes()[name](language=tokenizer, **self.params[name])
        return self._filters[key]


def _lines(text: str) -> int:
    return len(text.splitlines())


def _params(name: str, value: dict | bool) -> dict:
    if value is True or value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected true, false or a mapping of datatrove's "
                         f"parameters, got {value!r}")
    if {"language", "exclusion_writer"} & set(value):
        raise ValueError(f"{name}: `language` is the stage's (per row, from "
                         "language_column), and nothing is written aside: rejected rows "
                         "keep their columns")
    return dict(value)
