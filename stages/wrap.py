"""WRAP rephrasing (Maini et al. 2024; DESIGN.md 4, `wrap`): a frozen instruct model
paraphrases each kept document, chunk by chunk, in one or more styles (easy, medium,
hard, qa), and the paraphrase becomes a new synthetic training document.

Unlike the scoring stages this one makes rows. To keep the stage contract (same rows
in and out) it returns them nested: `wrap_rephrasings` holds each row's paraphrases,
and the writer turns those of curated documents into rows of their own
(`synthetic=true`, `parent_id`, `style`, `model`, `chunk_count`, token counts), at
the configured real:synthetic ratio. The ledger and the invariant count real rows.

Only documents still kept by the filters so far, in `languages`, and in the
`sample_fraction` (by a hash of the id) are rephrased. A paraphrase that is empty,
much shorter or longer than its chunk, repetitive, or in another language than the
document is dropped, and `wrap_guard_drops` says why. When the engine fails, the
document stays as it is (real rows never depend on the generator) and the failure
is recorded the same way.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import pyarrow as pa

from thresher.models.hashing import unit_hash
from thresher.models.llm import ENGINES, Sampling, special_markers
from thresher.models.wrap import STYLES, build_request, chunk_text, guard
from thresher.stages.base import BatchFailure, Resources, Stage, call_engine

log = logging.getLogger(__name__)

_TAGS = re.compile(r"^\s*<text>|</text>\s*$")
DEFAULT_ENGINE = {"engine": "transformers", "model": "smollm2-135m-instruct", "batch_size": 8}
REPHRASING = pa.struct([("style", pa.string()), ("text", pa.string()), ("model", pa.string()),
                        ("chunk_count", pa.int32()), ("prompt_tokens", pa.int32()),
                        ("completion_tokens", pa.int32())])


class WrapRephrase(Stage):
    name = "wrap"
    kept_only = True  # paraphrase what is still kept: the rest would be thrown away
    fusable = False  # an LLM: its own operator, not one copy in every CPU worker
    columns = {"wrap_rephrasings": pa.list_(REPHRASING), "wrap_guard_drops": pa.list_(pa.string())}
    reads = ("lang",)  # when present: paraphrases in the document's language only
    default_resources = Resources(num_cpus=1, concurrency=1, batch_size=16)

    def __init__(self, engine: dict | None = None, styles: list[str] | str = "medium",
                 sample_fraction: float = 1.0, languages: list[str] | None = ("en",),
                 chunk_tokens: int = 300, ratio: float = 1.0, min_ratio: float = 0.5,
                 max_ratio: float = 2.0, max_repeat: float = 0.3, temperature: float = 0.7,
                 top_p: float = 0.9, seed: int = 0, language_check: bool = True,
                 resources: Resources | None = None):
        super().__init__(resources)
        self.engine_spec = {**DEFAULT_ENGINE, **(engine or {})}
        if self.engine_spec["engine"] not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine_spec['engine']!r}")
        self.styles = [styles] if isinstance(styles, str) else list(styles)
        unknown = [s for s in self.styles if s not in STYLES]
        if unknown or not self.styles:
            raise ValueError(f"unknown WRAP styles {unknown}; choose from {', '.join(STYLES)}")
        if not 0 < sample_fraction <= 1:
            raise ValueError(f"sample_fraction must be in (0, 1], got {sample_fraction}")
        if not 0 < min_ratio < 1 < max_ratio:
            raise ValueError("the guards need 0 < min_ratio < 1 < max_ratio")
        if ratio <= 0:
            raise ValueError(f"ratio (synthetic:real tokens per style) must be > 0, got {ratio}")
        if chunk_tokens < 16:
            raise ValueError(f"chunk_tokens must be at least 16, got {chunk_tokens}")
        self.sample_fraction = sample_fraction
        self.languages = set(languages) if languages else None
        self.chunk_tokens = chunk_tokens
        self.ratio = ratio
        self.limits = (min_ratio, max_ratio, max_repeat)
        self.sampling = dict(temperature=temperature, top_p=top_p, seed=seed)
        self.language_check = language_check
        self._engine = None
        self._lid = None

    def describe(self) -> dict:
        return {"engine": self.engine_spec, "styles": self.styles,
                "sample_fraction": self.sample_fraction, "languages": sorted(self.languages or []),
                "chunk_tokens": self.chunk_tokens, "ratio": self.ratio,
                "guards": dict(zip(("min_ratio", "max_ratio", "max_repeat"), self.limits)),
                "sampling": self.sampling}

    def check(self) -> None:
        if self.engine_spec["engine"] != "openai":
            from thresher.models.registry import resolve_model

            resolve_model(str(self.engine_spec.get("model")))

    def model_files(self) -> list[Path]:
        model = Path(str(self.engine_spec.get("model", "")))
        return [model] if model.exists() else []

    def memory_estimate(self) -> int:
        from thresher.models.llm import engine_memory_estimate

        return engine_memory_estimate(self.engine_spec)

    def setup(self) -> None:
        from thresher.models.llm import load_engine

        self._engine = load_engine(self.engine_spec)
        tokenizer = self._engine.text_tokenizer
        self._markers = special_markers(tokenizer)
        if tokenizer is None:
            self._count = lambda text: max(1, len(text) // 4)
        else:
            self._count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if self.language_check:
            from thresher.models.langid import FastTextLID
            from thresher.models.registry import resolve

            self._lid = FastTextLID(resolve("lid176"))

    # --- per batch -----------------------------------------------------------------

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = batch.column("id").to_pylist()
        texts = batch.column("text").to_pylist()
        langs = (batch.column("lang").to_pylist() if "lang" in batch.column_names
                 else [None] * batch.num_rows)
        chosen = [i for i in range(batch.num_rows) if self._wanted(ids[i], langs[i])]
        rephrasings: list[list | None] = [None] * batch.num_rows
        drops: list[list | None] = [None] * batch.num_rows
        if chosen:
            jobs = [(i, style, chunks) for i in chosen
                    for chunks in [chunk_text(texts[i], self._count, self.chunk_tokens)]
                    for style in self.styles if chunks]
            try:
                results = self._generate(jobs, [ids[i] for i in chosen])
            except BatchFailure as err:
                for i in chosen:
                    drops[i] = [f"{style}:engine_failed" for style in self.styles]
                log.warning("wrap: no paraphrases for %d documents: %s", len(chosen), err)
                results = []
            for (i, style, chunks), outputs in zip(jobs, results):
                made, reason = self._assemble(style, chunks, outputs, langs[i])
                if made:
                    rephrasings[i] = (rephrasings[i] or []) + [made]
                else:
                    drops[i] = (drops[i] or []) + [f"{style}:{reason}"]
        return batch.append_column("wrap_rephrasings", pa.array(rephrasings, self.columns[
            "wrap_rephrasings"])).append_column("wrap_guard_drops", pa.array(
                drops, pa.list_(pa.string())))

    def _wanted(self, doc_id: str, lang: str | None) -> bool:
        if self.languages is not None and lang is not None and lang not in self.languages:
            return False
        return unit_hash(f"wrap:{doc_id}") < self.sample_fraction

    def _generate(self, jobs, ids) -> list[list]:
        """One engine call for every chunk of every job; outputs regrouped per job."""
        requests, owners = [], []
        for j, (_, style, chunks) in enumerate(jobs):
            for chunk in chunks:
                requests.append(build_request(chunk.text, style, self._markers))
                owners.append(j)
        longest = max(c.tokens for _, _, chunks in jobs for c in chunks)
        sampling = Sampling(max_new_tokens=int(longest * self.limits[1]) + 8, **self.sampling)
        generations = call_engine(lambda: self._engine.generate(requests, sampling), ids,
                                  self.name)
        grouped: list[list] = [[] for _ in jobs]
        for owner, generation in zip(owners, generations):
            grouped[owner].append(generation)
        return grouped

    def _assemble(self, style, chunks, outputs, lang) -> tuple[dict | None, str | None]:
        min_ratio, max_ratio, max_repeat = self.limits
        texts = []
        for chunk, generation in zip(chunks, outputs):
            # Small models echo the prompt's <text> tags around their answer.
            text = _TAGS.sub("", generation.text).strip()
            reason = guard(chunk.text, text, self._count, min_ratio, max_ratio, max_repeat)
            if reason:
                return None, reason
            texts.append(text)
        joined = "\n\n".join(texts)
        if self._lid is not None and lang:
            [found], _ = self._lid.predict([joined])
            if found != lang:
                return None, f"language_{found}"
        return {"style": style, "text": joined, "model": self._engine.name,
                "chunk_count": len(chunks),
                "prompt_tokens": sum(g.prompt_tokens for g in outputs),
                "completion_tokens": sum(g.completion_tokens for g in outputs)}, None


    # --- after the keep/drop decision: the paraphrases become rows -----------------

    def settle(self, rows: pa.Table, curated: pa.Array) -> tuple[pa.Table, pa.Table, dict]:
        """The curated documents' paraphrases as rows of their own (synthetic=true);
        the real rows lose the nested column and get synthetic=false."""
        made, mix = synthetic_rows(rows.filter(curated), self.ratio)
        rows = rows.drop_columns(["wrap_rephrasings"]).append_column(
            "synthetic", pa.array([False] * rows.num_rows))
        counts = {"real_tokens": mix["real_tokens"]}
        for style, stats in mix["styles"].items():
            counts.update({f"{style}.{k}": v for k, v in stats.items()})
        return rows, made, counts

    def made_summary(self, counts: dict) -> dict:
        """Rows and tokens per style, apart from the real ones (the invariant counts
        real rows only), and how close the mix came to the configured ratio."""
        real = counts.get("real_tokens", 0)
        styles = sorted({k.split(".")[0] for k in counts if "." in k})
        return {"real_tokens": real,
                "styles": {s: {"rows": counts.get(f"{s}.rows", 0),
                               "tokens": counts.get(f"{s}.tokens", 0),
                               "dropped_over_ratio": counts.get(f"{s}.over_ratio", 0),
                               "synthetic_to_real_tokens":
                                   round(counts.get(f"{s}.tokens", 0) / real, 4) if real else None}
                           for s in styles},
                "tokens": "whitespace-separated words"}


# What a paraphrase takes from its parent, when the parent has it: the labels a
# mixture groups by and the crawl's own metadata. Scores are not taken: they were
# computed on the parent's text, not on the paraphrase's.
INHERITED = ("lang", "dataman_domain", "dataman_domain_name", "url", "source", "crawl",
             "date")

SYNTHETIC_SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("synthetic", pa.bool_()),
    ("parent_id", pa.string()), ("style", pa.string()), ("model", pa.string()),
    ("chunk_count", pa.int32()), ("wrap_prompt_tokens", pa.int32()),
    ("wrap_completion_tokens", pa.int32()), ("source_shard", pa.string()),
    ("source_row", pa.int64()),
])


def synthetic_rows(curated: pa.Table, ratio: float) -> tuple[pa.Table, dict]:
    """The paraphrases of curated documents as rows of their own, at most `ratio`
    synthetic tokens per real token over all styles together (the paper mixes real
    and synthetic 1:1; tokens: whitespace words). Which ones go over the cap is
    decided by a hash of the id, not by order or style."""
    real_tokens = sum(len(t.split()) for t in curated.column("text").to_pylist())
    keep = [c for c in INHERITED if c in curated.column_names]
    made = []
    for row in curated.select(["id", "source_shard", "source_row", "wrap_rephrasings", *keep]
                              ).to_pylist():
        for one in row["wrap_rephrasings"] or []:
            made.append({
                "id": f"{row['id']}-wrap-{one['style']}", "text": one["text"],
                "synthetic": True, "parent_id": row["id"], "style": one["style"],
                "model": one["model"], "chunk_count": one["chunk_count"],
                "wrap_prompt_tokens": one["prompt_tokens"],
                "wrap_completion_tokens": one["completion_tokens"],
                "source_shard": row["source_shard"], "source_row": row["source_row"],
                **{c: row[c] for c in keep}})
    made.sort(key=lambda r: hashlib.sha1(r["id"].encode()).digest())
    mix: dict = {"real_tokens": real_tokens, "styles": {}}
    out, tokens = [], 0
    for row in made:
        n = len(row["text"].split())
        stats = mix["styles"].setdefault(row["style"], {"rows": 0, "tokens": 0, "over_ratio": 0})
        if tokens + n > ratio * real_tokens:
            stats["over_ratio"] += 1
            continue
        tokens += n
        stats["rows"] += 1
        stats["tokens"] += n
        out.append(row)
    out.sort(key=lambda r: (r["source_row"], r["style"]))
    schema = SYNTHETIC_SCHEMA
    for column in keep:
        schema = schema.append(curated.schema.field(column))
    return pa.Table.from_pylist(out, schema=schema), mix
