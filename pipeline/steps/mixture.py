"""The global mixing step after a run: Aioli's proportions over groups of curated
documents, the baselines under the same budget, and the final training shards.

1. Sample: per group (a column such as `dataman_domain` or `lang`), the documents
   whose id hashes lowest, streamed from curated/ (bounded: `docs_per_group`), split
   by another hash into train / validation / test.
2. Mix: Aioli (models/aioli.py) on the proxy LM (models/proxy_lm.py), then each
   baseline (stratified = uniform, or a fixed mixture) from the same initial model
   seed for the same number of steps; per-group validation and test losses of each.
3. Write: OUT/mixture/proportions.json, then training shards drawn per group to
   `training_tokens` with Aioli's p: each document is taken floor(k) times plus once
   more with probability frac(k), k = the group's target / its tokens, decided by a
   hash of (seed, id): deterministic, streaming, two passes over curated/. A group
   with too few tokens is upsampled (k > 1), and that is reported, not hidden. Each
   shard's rows are shuffled by (seed, shard): a trainer that reads in order must
   not meet a document's copies back to back.
4. Tokenize (when mixture.tokenize is set): each shard, as token ids in Megatron's
   or datatrove's format (pipeline/steps/tokenize.py).
Tokens in steps 1-3 are whitespace-separated words; step 4 counts the tokenizer's.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import time
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from thresher.models.aioli import AioliSettings, run_aioli, run_fixed
from thresher.models.proxy_lm import ProxySettings, ProxyTrainer
from thresher.pipeline.engine.config import MixtureOptions
from thresher.pipeline.io.storage import Store
from thresher.pipeline.io.tokenized import PATTERNS as TOKENIZED_PATTERNS
from thresher.pipeline.steps.tokenize import tokenize_shards
from thresher.pipeline.engine.write import is_made_part

log = logging.getLogger(__name__)
OTHER = "other"


def _unit(*parts: str) -> float:
    digest = hashlib.sha1("\x1f".join(parts).encode()).hexdigest()
    return int(digest[:12], 16) / float(1 << 48)


class Parts(NamedTuple):
    """Curated part files and the output they are in."""
    out: Store
    paths: list[str]


def _parts(out: Store) -> tuple[Parts, Parts]:
    """The real and the synthetic (WRAP) curated parts."""
    paths = out.files("curated", "part-*.parquet")
    return (Parts(out, [p for p in paths if not is_made_part(p)]),
            Parts(out, [p for p in paths if is_made_part(p)]))


def _scan(parts: Parts, columns: list[str]):
    """Record batches of the wanted columns (a missing column reads as null)."""
    for part in parts.paths:
        dataset = ds.dataset(part, filesystem=parts.out.fs)
        present = [c for c in columns if c in dataset.schema.names]
        for batch in dataset.to_batches(columns=present, batch_size=4096):
            table = pa.Table.from_batches([batch])
            for c in columns:
                if c not in present:
                    table = table.append_column(c, pa.nulls(table.num_rows, pa.string()))
            yield table


def group_sizes(parts: Parts, group_by: str) -> Counter:
    sizes: Counter = Counter()
    for table in _scan(parts, [group_by]):
        sizes.update(str(g) for g in table.column(group_by).to_pylist())
    return sizes


def group_names(sizes: Counter, max_groups: int) -> tuple[list[str], dict[str, str]]:
    """The largest max_groups groups, the rest merged into `other` (when it exists)."""
    top = [g for g, _ in sizes.most_common(max_groups)]
    mapping = {g: (g if g in top else OTHER) for g in sizes}
    return sorted(set(mapping.values())), mapping


def sample_groups(parts, group_by, mapping, per_group: int, seed: int) -> dict[str, dict]:
    """Bottom-k by hash of the id per group, then train / val / test by another hash."""
    heaps: dict[str, list] = defaultdict(list)
    for table in _scan(parts, ["id", "text", group_by]):
        for doc_id, text, group in zip(*(table.column(c).to_pylist()
                                         for c in ("id", "text", group_by))):
            key = -_unit(str(seed), "sample", doc_id)
            heap = heaps[mapping[str(group)]]
            if len(heap) < per_group:
                heapq.heappush(heap, (key, doc_id, text))
            elif key > heap[0][0]:
                heapq.heapreplace(heap, (key, doc_id, text))
    splits = {}
    for group, heap in heaps.items():
        split = {"train": [], "val": [], "test": []}
        for _, doc_id, text in heap:
            u = _unit(str(seed), "split", doc_id)
            split["val" if u < 0.1 else "test" if u < 0.2 else "train"].append(text)
        splits[group] = split
    return splits


def estimate(out: Store | str | Path, options: MixtureOptions) -> dict:
    """Steps 1 and 2: the proportions and the comparison, as written to proportions.json."""
    real, _ = _parts(_store(out))
    sizes = group_sizes(real, options.group_by)
    groups, mapping = group_names(sizes, options.max_groups)
    if len(groups) < 2:
        raise ValueError(f"mixing needs at least 2 groups in `{options.group_by}`; the curated "
                         f"rows have {dict(sizes)}")
    splits = sample_groups(real, options.group_by, mapping, options.docs_per_group, options.seed)
    settings = AioliSettings(seed=options.seed, **options.aioli)
    # The cosine runs over the whole budget unless the config says otherwise.
    proxy = ProxySettings(**{"total_steps": settings.total_steps, **options.proxy})
    train = {g: splits[g]["train"] for g in groups}
    val = {g: splits[g]["val"] for g in groups}
    test = {g: splits[g]["test"] for g in groups}

    def fresh() -> ProxyTrainer:  # the same initial model for every method
        return ProxyTrainer(train, val, proxy, seed=options.seed)

    results = {}
    started = time.perf_counter()
    trainer = fresh()
    trace = run_aioli(trainer, settings, log=lambda r, p, l: log.info(
        "aioli round %d: p=%s mean val loss %.4f", r, np.round(p, 3).tolist(), np.mean(l)))
    results["aioli"] = _summary(trace, trainer, test, started)
    # What is written is Aioli's last p, a static mixture: trained from the same
    # initial model for the same steps, it gets a test loss of its own (the one above
    # is that of Aioli's changing schedule).
    final = np.array(trace.p[-1])
    started = time.perf_counter()
    trainer = fresh()
    results["aioli_static"] = _summary(run_fixed(trainer, final, settings), trainer, test, started)
    for name, p in _baselines(options.baselines, groups):
        started = time.perf_counter()
        trainer = fresh()
        results[name] = _summary(run_fixed(trainer, p, settings), trainer, test, started)
    return {"group_by": options.group_by, "groups": groups,
            "group_docs": {g: sum(n for k, n in sizes.items() if mapping[k] == g) for g in groups},
            "p": results["aioli"]["p"][-1], "settings": asdict(settings), "proxy": asdict(proxy),
            "sample": {g: {k: len(v) for k, v in splits[g].items()} for g in groups},
            "methods": results,
            "test_loss_mean": {name: r["test_loss_mean"] for name, r in results.items()}}


def _baselines(baselines: list, groups: list[str]):
    for entry in baselines:
        if entry == "stratified":
            yield "stratified", np.ones(len(groups))
        elif isinstance(entry, dict) and "fixed" in entry:
            weights = entry["fixed"]
            yield "fixed", np.array([float(weights.get(g, 0.0)) for g in groups])


def _summary(trace, trainer: ProxyTrainer, test: dict, started: float) -> dict:
    windows = trainer.fixed_sequences(test)
    test_losses = trainer.losses(windows)
    return {"seconds": round(time.perf_counter() - started, 2), "p": trace.p, "A": trace.A,
            "val_losses": trace.losses, "steps": trace.steps,
            "test_losses": test_losses.tolist(), "test_loss_mean": float(np.mean(test_losses)),
            "test_perplexity_mean": float(np.mean(np.exp(test_losses))),
            "windows": {"val": {g: int(trainer.val[g].shape[0]) for g in trainer.groups},
                        "test": {g: int(windows[g].shape[0]) for g in trainer.groups}}}


def write_training_shards(out: Store | str | Path, options: MixtureOptions,
                          mixture: dict) -> dict:
    """Step 3: documents per group to the token budget with p (see the module doc)."""
    out = _store(out)
    real, synthetic = _parts(out)
    parts = Parts(out, real.paths + synthetic.paths)
    groups, p = mixture["groups"], dict(zip(mixture["groups"], mixture["p"]))
    sizes = group_sizes(real, options.group_by)
    _, mapping = group_names(sizes, options.max_groups)
    tokens: Counter = Counter()
    skipped = 0
    for table in _scan(parts, ["text", options.group_by]):
        for text, group in zip(table.column("text").to_pylist(),
                               table.column(options.group_by).to_pylist()):
            if group is None or str(group) not in mapping:
                skipped += 1
                continue
            tokens[mapping[str(group)]] += len(text.split())
    budget = options.training_tokens or sum(tokens.values())
    factor = {g: (p[g] * budget / tokens[g]) if tokens[g] else 0.0 for g in groups}
    for pattern in ("shard-*.parquet", *TOKENIZED_PATTERNS):
        for old in out.files("training", pattern):
            out.delete(old)
    index = {"seed": options.seed, "budget_tokens": budget, "p": p, "shards": [],
             "groups": {g: {"available_tokens": tokens[g], "target_tokens": round(p[g] * budget),
                            "sampling_factor": round(factor[g], 4),
                            "upsampled": factor[g] > 1, "tokens": 0, "docs": 0, "repeats": 0}
                        for g in groups},
             "skipped_without_group": skipped}
    rows: list[dict] = []
    columns = ["id", "text", options.group_by, "synthetic", "parent_id", "source_shard",
               "source_row"]
    for table in _scan(parts, columns):
        for row in table.to_pylist():
            group = row[options.group_by]
            if group is None or str(group) not in mapping:
                continue
            group = mapping[str(group)]
            k = factor[group]
            copies = int(math.floor(k)) + (_unit(str(options.seed), "draw", row["id"]) < k % 1)
            for copy in range(copies):
                n = len(row["text"].split())
                stats = index["groups"][group]
                stats["tokens"] += n
                stats["docs"] += copy == 0
                stats["repeats"] += copy > 0
                rows.append({"id": row["id"], "text": row["text"], "group": group,
                             "synthetic": bool(row["synthetic"]), "parent_id": row["parent_id"],
                             "source_shard": row["source_shard"], "source_row": row["source_row"],
                             "copy": copy})
                if len(rows) >= options.shard_max_rows:
                    _flush(out, rows, index)
    _flush(out, rows, index)
    if options.tokenize:
        _tokenize(out, options.tokenize, index)
    out.write_text(out.path("training", "index.json"), json.dumps(index, indent=1))
    return index


def _flush(out: Store, rows: list[dict], index: dict) -> None:
    if not rows:
        return
    order = np.random.default_rng([index["seed"], len(index["shards"])]).permutation(len(rows))
    table = pa.Table.from_pylist([rows[i] for i in order], schema=TRAINING_SCHEMA)
    name = f"shard-{len(index['shards']):05d}.parquet"
    out.write_table(table, out.path("training", name))
    counts = Counter()
    for r in rows:
        counts[r["group"]] += len(r["text"].split())
    index["shards"].append({"file": name, "rows": len(rows), "tokens": dict(counts)})
    rows.clear()


def _tokenize(out: Store, spec: dict, index: dict) -> None:
    """Step 4: the shards' tokenized files, and their token counts (EOS included) per
    shard and per group into the index."""
    results = tokenize_shards(out, [shard["file"] for shard in index["shards"]], spec)
    groups: Counter = Counter()
    for shard, result in zip(index["shards"], results):
        shard["tokenized"] = {k: result[k] for k in ("files", "docs", "tokens")}
        groups.update(result["tokens"])
    first = results[0] if results else {}
    index["tokenized"] = {
        "tokenizer": spec["tokenizer"], "format": spec.get("format", "megatron"),
        **{k: first.get(k) for k in ("eos_id", "vocab_size", "dtype")},
        "docs": sum(r["docs"] for r in results), "tokens": sum(groups.values()),
        "groups": {g: groups[g] for g in index["groups"]}}


TRAINING_SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("group", pa.string()),
    ("synthetic", pa.bool_()), ("parent_id", pa.string()), ("source_shard", pa.string()),
    ("source_row", pa.int64()), ("copy", pa.int32()),
])


def run_mixture(out: Store | str | Path, options: MixtureOptions) -> dict:
    out = _store(out)
    mixture = estimate(out, options)
    out.write_text(out.path("mixture", "proportions.json"), json.dumps(mixture, indent=1))
    index = write_training_shards(out, options, mixture)
    return {"groups": mixture["groups"], "p": mixture["p"],
            "test_loss_mean": mixture["test_loss_mean"],
            "training": {"shards": len(index["shards"]), "budget_tokens": index["budget_tokens"],
                         "upsampled_groups": [g for g, s in index["groups"].items()
                                              if s["upsampled"]]}
            | ({"tokenized": {k: index["tokenized"][k] for k in ("format", "tokens", "groups")}}
               if "tokenized" in index else {})}


def _store(out: Store | str | Path) -> Store:
    return out if isinstance(out, Store) else Store.at(str(out))
