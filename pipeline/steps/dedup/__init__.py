"""The dedup step: clusters of duplicates across this run's shards and every shard
done before, computed on the cluster before the run (DESIGN.md 4, `dedup`; the
method, its costs and its limits are in docs/dedup.md). One file per phase:

1. signatures.py  one pass over the new shards' text: entries written, key rows on
2. candidates.py  new key rows shuffled by key range and merged with the key index:
                  documents sharing a key become edges
3. components.py  connected components, large-star/small-star, log rounds
4. decisions.py   the kept member of each cluster, sizes, the cluster invariant
   urls.py        one document per URL per crawl, and across crawls by a policy
   index.py       the index's format, what a run retires and adds, its size
   ranged.py      the key and URL indexes: sorted runs by key range
   rebuild.py     `thresher dedup rebuild`: the index made again from the outputs

The run's stage (stages/dedup.py) then attaches each shard's decisions row by row.
Nothing here gathers documents, keys, edges or labels on the driver: it holds counts.
Every shuffle carries this run's rows and the earlier documents they touch, never
the index: a run's cost follows the new crawl (docs/dedup.md, "Cost").
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace

import numpy as np

from thresher.pipeline.engine.config import Config
from thresher.pipeline.engine.run import RunState, Step, phase
from thresher.pipeline.io.storage import Store
from thresher.pipeline.steps.dedup import components as components_mod
from thresher.pipeline.steps.dedup import index, ranged
from thresher.pipeline.steps.dedup.candidates import candidates, split_counts, with_keepers
from thresher.pipeline.steps.dedup.common import (KEY_ROWS_PER_PARTITION, KEYS,
                                                  CLUSTERS, SMALL_SHUFFLE_ROWS, URL_INDEX,
                                                  DedupError,
                                                  shuffles_as_tasks)
from thresher.pipeline.steps.dedup.decisions import decide
from thresher.pipeline.steps.dedup.signatures import departed_keys, signature_pass
from thresher.pipeline.steps.dedup.urls import decide_urls
from thresher.pipeline.steps.shard_pass import check_before, stage_index
from thresher.stages.dedup import Dedup, shard_folder

log = logging.getLogger(__name__)

__all__ = ["DedupError", "DedupStep", "check_placement", "find_stage", "index_size",
           "record_index", "run_dedup"]
CLUSTER_SIZES_READ = 200_000  # clusters counted by size for the report, at most


class DedupStep(Step):
    """The engine's step: clusters before the stream, the index after it."""

    name = "dedup"

    def __init__(self):
        self.pending: dict = {}

    def check(self, config: Config) -> None:
        check_placement(config)

    def wanted(self, config: Config) -> bool:
        return find_stage(config) is not None

    def before(self, run: RunState) -> dict:
        done = run.ledger.done_shards()
        numbers = run.ledger.shard_numbers([(s.path, s.fingerprint) for s in run.shards] + done)
        run.config, summary = run_dedup(run.config, run.shards, run.store, numbers,
                                        [p for p, _ in done], run.run_id)
        self.pending = summary.pop("pending_index", {})
        run.rewrite(summary.get("repair") or [], "dedup")
        return summary

    def after(self, run: RunState) -> dict:
        """The index gains the shards this run finished (done in the ledger: their rows
        add up on disk); the report's cluster sizes are read while here."""
        finished = {shard_folder(path) for path in run.finished_paths()}
        record_index(run.store, run.config, self.pending, finished)
        folders = sorted({shard_folder(t.shard.path) for t in run.tallies.values()})
        return {"index": index_size(run.store),
                "clusters_by_size": cluster_sizes(run.store, run.run_id, folders)}


def cluster_sizes(store: Store, run_id: str, folders: list[str]) -> dict[int, int]:
    """Clusters this run found or grew: how many of each size (members across all
    runs), from the first CLUSTER_SIZES_READ clusters. Each such cluster has a member
    in a shard this run wrote (`folders`), so only their decision files are read: the
    cost follows this run, not the index."""
    sizes: dict[int, int] = {}
    seen = set()
    for folder in folders:
        path = store.path(CLUSTERS, folder, f"{run_id}.parquet")
        if not store.exists(path):
            continue
        table = store.read_table(path, columns=["rep", "size"])
        for rep, size in zip(table.column("rep").to_pylist(), table.column("size").to_pylist()):
            if rep not in seen:
                seen.add(rep)
                sizes[size] = sizes.get(size, 0) + 1
        if len(seen) >= CLUSTER_SIZES_READ:
            break
    return dict(sorted(sizes.items()))


def find_stage(config: Config) -> int | None:
    return stage_index(config, "dedup")


def check_placement(config: Config) -> None:
    """Stages before dedup run in the signature pass too (shard_pass.check_before)."""
    check_before(config, "dedup", DedupError, " (keep_by may name a column of the input "
                 "or of a stage before dedup that needs none of these)")


def run_dedup(config: Config, shards, store: Store, numbers: dict[str, int],
              done_paths: list[str], run_id: str,
              output: str | None = None) -> tuple[Config, dict]:
    """Cluster the new shards' documents with each other and with the index; returns
    the config with the dedup stage pointed at the decisions, and a summary whose
    `repair` names the earlier shards whose decisions changed (to be written again)."""
    at = find_stage(config)
    if at is None:
        return config, {}
    import ray

    spec = config.stages[at]
    stage: Dedup = spec.build()
    started, phases = time.perf_counter(), {}
    index.check_format(store, stage, output or store.location)
    todo = list(shards)  # new, changed or unfinished: their old entries are retired
    redo = {shard_folder(s.path) for s in todo}
    done = {shard_folder(p): p for p in done_paths if p in numbers
            and shard_folder(p) not in redo}
    departed, departed_urls = index.retire(store, todo, numbers)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    index_docs = index.summary(store).get("docs", 0)
    new_docs = sum(s.num_rows or 0 for s in todo)
    key_rows = new_docs * (stage.num_keys + 1)  # what the shuffles carry, and a bit more
    partitions = (stage.partitions if stage.partitions != "auto" else
                  max(cpus, math.ceil(key_rows / KEY_ROWS_PER_PARTITION)))
    buckets = 4 * partitions  # more buckets than partitions: even partitions
    level = ranged.level_for(buckets)
    live = np.array(sorted(numbers[p] for p in done.values()), np.int64)
    ray.data.DataContext.get_current().enable_progress_bars = False

    _check_keep_by(config, at, todo)
    log.info("dedup: signing %d shards (%s rows), then finding clusters against an index of "
             "%s documents", len(todo), f"{new_docs:,}", f"{index_docs:,}")
    with shuffles_as_tasks(key_rows <= SMALL_SHUFFLE_ROWS):
        work = [{"path": s.path, "key": s.key, "folder": shard_folder(s.path),
                 "number": numbers[s.path]} for s in todo]
        with phase(phases, "signatures"):
            keys = signature_pass(work, config, at, store, level, cpus, run_id)
            if len(departed):
                keys = keys.union(ray.data.from_arrow(departed_keys(departed, level)))
            keys = keys.materialize()
        shuffled = {"key_rows": keys.count()}
        with phase(phases, "candidates"):
            edges = keys.groupby("bucket", num_partitions=partitions).map_groups(
                candidates, batch_format="pyarrow",
                fn_kwargs={"out": store.location, "level": level, "live": live,
                           "written": ranged.levels(store, KEYS), "run_id": run_id,
                           "buckets": buckets}).materialize()
            edges, key_index_read = split_counts(edges)
        earlier = {numbers[p]: f for f, p in done.items()}
        with phase(phases, "keepers"):
            shuffled["edge_ends"] = edges.count()
            edges = with_keepers(edges, out=store.location, folders=earlier, live=live,
                                 buckets=buckets, partitions=partitions).materialize()
        log.info("dedup: signatures written; finding clusters among %s candidate pairs",
                 f"{edges.count():,}")
        with phase(phases, "components"):
            labels, graph = components_mod.components(
                edges, buckets=buckets, partitions=partitions,
                finish_below=components_mod.FINISH_BELOW)
        folders = {w["number"]: (w["folder"], True) for w in work} | \
            {n: (f, False) for n, f in earlier.items()}
        shuffled["component_edges"] = 2 * sum(graph["edges"][:-1]) + graph["edges"][-1]
        written = []
        if graph["edges"][0]:
            with phase(phases, "decisions"):
                written, counts = decide(labels, store, folders, buckets=buckets, level=level,
                                         partitions=partitions, run_id=run_id,
                                         scope=stage.scope)
            shuffled.update(counts)
        url_written, url_read = [], 0
        if stage.url:
            with phase(phases, "urls"):
                url_written, counts = decide_urls(
                    store, [w["folder"] for w in work], departed_urls, level=level,
                    written=ranged.levels(store, URL_INDEX), live=live, partitions=partitions,
                    cpus=cpus, run_id=run_id, policy=stage.url_crawls)
            url_read = counts.pop("url_index_rows_read")
            shuffled.update(counts)
    per_shard = index.signed_counts(store, [s.path for s in todo])
    paths = {shard_folder(s.path): s.path for s in todo} | done
    repair = sorted(({paths[w["folder"]] for w in written if w["promoted"]}
                     | {paths[w["folder"]] for w in url_written if w["changed"]})
                    - {s.path for s in todo})
    summary = {
        "documents_signed": sum(per_shard.values()), "index_documents_before": index_docs,
        "partitions": partitions, "key_ranges": 2 ** level,
        "candidate_edges": graph["edges"][0],
        "rounds": graph["rounds"], "edges_per_round": graph["edges"],
        "documents_in_clusters": sum(w["members"] for w in written),
        "removed": sum(w["removed"] for w in written),
        "clusters_touched": sum(w["kept"] for w in written),
        "kept_documents_departed": int(len(departed)),
        "promoted": sum(w["promoted"] for w in written),
        "cluster_invariant_violations": sum(w["violations"] for w in written),
        "url_dropped": sum(w["url_dropped"] for w in url_written),
        "url_changed": sum(w["changed"] for w in url_written),
        "url_keys_departed": int(len(departed_urls)),
        "repair": repair,
        "rows_shuffled": shuffled, "index_rows_read": {"keys": key_index_read, "urls": url_read},
        "seconds": {k: round(v, 2) for k, v in phases.items()},
        "removed_per_shard": {paths[w["folder"]]: w["removed"] for w in written
                              if w["removed"]},
    }
    summary["seconds"]["total"] = round(time.perf_counter() - started, 2)
    if summary["cluster_invariant_violations"]:
        raise RuntimeError(f"dedup: {summary['cluster_invariant_violations']} decisions are in "
                           "clusters without exactly one kept member; this is a bug")
    log.info("dedup: %s documents signed against an index of %s; %s candidate pairs, "
             "%d rounds; %d documents in clusters of 2+, %d to drop, %d dropped by URL, "
             "%d earlier shards to write again (%.0f s)",
             f"{summary['documents_signed']:,}", f"{index_docs:,}",
             f"{summary['candidate_edges']:,}", graph["rounds"],
             summary["documents_in_clusters"], summary["removed"], summary["url_dropped"],
             len(repair), summary["seconds"]["total"])
    summary["pending_index"] = {shard_folder(s.path): per_shard.get(shard_folder(s.path), 0)
                                for s in todo}
    specs = list(config.stages)
    specs[at] = replace(spec, params={**spec.params, "decisions": store.uri("dedup"),
                                      "run_id": run_id})
    return replace(config, stages=specs), summary


def _check_keep_by(config: Config, at: int, shards) -> None:
    """keep_by must name a column of the input or of a stage before dedup: said now,
    not as a failed worker."""
    keep_by = config.stages[at].params.get("keep_by")
    if not keep_by or not shards:
        return
    import pyarrow.parquet as pq

    from thresher.pipeline.io.storage import open_input

    made = {c for spec in config.stages[:at] for c in spec.cls.columns}
    with open_input(shards[0].path) as handle:
        present = set(pq.read_schema(handle).names)
    if keep_by not in made | present:
        raise DedupError(f"{config.source}: dedup keep_by {keep_by!r} is neither a column of "
                         f"the input ({', '.join(sorted(present))}) nor one that a stage before "
                         "dedup adds")


def record_index(store: Store, config: Config, pending: dict, finished: set[str]) -> dict:
    """The index gains the `finished` shard folders of `pending` (the step's signed
    shards, by folder)."""
    at = find_stage(config)
    if at is None:
        return index.summary(store)
    return index.record(store, config.stages[at].build(), pending, finished)


def index_size(store: Store) -> dict:
    return index.size(store)

