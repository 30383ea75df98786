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
