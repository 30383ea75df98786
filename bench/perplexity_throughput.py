"""Perplexity filters per core: thresher's ccnet + harm stages vs datatrove's
KenlmModel vs the raw kernels, on the same documents and models, in one process.

  python bench/perplexity_throughput.py [--input data/demo-crawl] [--docs 20000]

Documents: the demo crawl's documents whose language (fastText lid.176, computed
first, not timed) has a CCNet model in models-data/ccnet.
  ccnet, thresher    CCNetPerplexity.__call__ via the engine's apply_stage, batches of 256
  ccnet, datatrove   KenlmModel.get_perplexity per document (its own normalization)
  ccnet, kernels     SentencePiece encode (batched) + kenlm score, no normalization: the limit
  harm, thresher     HarmfulPerplexity via apply_stage (Spanish documents)
  harm, kernels      kenlm score of the text with newlines as spaces
One process, one core: the numbers are per core. Model loading is outside the timer
on every side: the stages' setup() and a first datatrove call per language (KenlmModel
loads its files on first use) run before the clock starts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers import datatrove_kenlm  # noqa: E402
from thresher.models.kenlm_lm import lm_dir_languages  # noqa: E402
from thresher.models.langid import FastTextLID  # noqa: E402
from thresher.models.registry import resolve, resolve_dir  # noqa: E402
from thresher.pipeline.engine.apply import apply_stage  # noqa: E402
from thresher.stages.ccnet import CCNetPerplexity  # noqa: E402
from thresher.stages.harm import HarmfulPerplexity  # noqa: E402


def load(inputs: str, limit: int) -> pa.Table:
    table = pq.read_table(sorted(Path(inputs).glob("part-*.parquet")), columns=["text"])
    texts = [t for t in table.column("text").to_pylist() if t and t.strip()][:limit]
    langs, _ = FastTextLID(resolve("lid176")).predict(texts)
    n = len(texts)
    return pa.table({"text": texts, "lang": langs, "_error": pa.nulls(n, pa.string()),
                     "_pre": pa.nulls(n, pa.string())})


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_stage(stage, table: pa.Table, batch: int = 256) -> None:
    for start in range(0, table.num_rows, batch):
        apply_stage(stage, table.slice(start, batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default="data/demo-crawl")
    parser.add_argument("--docs", type=int, default=20000)
    args = parser.parse_args()
    lm_dir = resolve_dir("ccnet-default")
    langs = lm_dir_languages(lm_dir)
    table = load(args.input, args.docs * 3)
    table = table.filter(pa.compute.is_in(table.column("lang"), pa.array(sorted(langs))))
    table = table.slice(0, args.docs)
    texts, doc_langs = table.column("text").to_pylist(), table.column("lang").to_pylist()
    by_lang = {l: [t for t, dl in zip(texts, doc_langs) if dl == l] for l in langs}
    mb = sum(len(t.encode()) for t in texts) / 1e6
    rows = []

    stage = CCNetPerplexity(lm_dir=str(lm_dir), cutoffs={l: (1.0, 2.0) for l in langs})
    stage.setup()  # models loaded before the clock, as for the peers below
    rows.append(("ccnet", "thresher stage", len(texts), mb, timed(lambda: run_stage(stage, table))))
    peers = {l: datatrove_kenlm(lm_dir, l) for l in langs}
    for peer in peers.values():
        peer.get_perplexity("warm up")  # loads its SentencePiece and KenLM files
    rows.append(("ccnet", "datatrove KenlmModel", len(texts), mb, timed(
        lambda: [peers[l].get_perplexity(t) for l, ts in by_lang.items() for t in ts])))
    kernels = stage._models

    def raw_ccnet():
        for lang, ts in by_lang.items():
            model = kernels[lang]
            for pieces in model.sp.Encode(ts, out_type=str):
                model.lm.score(" ".join(pieces))
    rows.append(("ccnet", "raw kernels (sp + kenlm)", len(texts), mb, timed(raw_ccnet)))

    harm = HarmfulPerplexity()
    harm.setup()
    spanish = table.filter(pa.compute.equal(table.column("lang"), "es"))
    es_texts = spanish.column("text").to_pylist()
    es_mb = sum(len(t.encode()) for t in es_texts) / 1e6
    rows.append(("harm", "thresher stage", len(es_texts), es_mb, timed(lambda: run_stage(harm, spanish))))
    lm = harm._lms["es"].lm
    rows.append(("harm", "raw kernel (kenlm)", len(es_texts), es_mb,
                 timed(lambda: [lm.score(t.replace("\n", " ")) for t in es_texts])))

    print(f"\nper core, {len(texts):,} documents ({', '.join(sorted(langs))}) from {args.input}\n")
    print(f"| {'filter':<6} | {'implementation':<26} | {'docs':>6} | {'MB':>5} | {'s':>6} | "
          f"{'docs/s':>7} | {'MB/s':>5} | {'vs kernels':>10} |")
    print(f"|{'-' * 8}|{'-' * 28}|{'-' * 8}|{'-' * 7}|{'-' * 8}|{'-' * 9}|{'-' * 7}|{'-' * 12}|")
    limit = {r[0]: r[4] for r in rows if r[1].startswith("raw")}
    for name, impl, docs, size, seconds in rows:
        print(f"| {name:<6} | {impl:<26} | {docs:>6,} | {size:>5.1f} | {seconds:>6.2f} | "
              f"{docs / seconds:>7,.0f} | {size / seconds:>5.2f} | {seconds / limit[name]:>9.2f}x |")


if __name__ == "__main__":
    main()
