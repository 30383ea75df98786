"""Heuristic filters: thresher's `heuristics` stage vs datatrove's filters, same documents.

  python bench/heuristics_throughput.py [--input data/demo-crawl] [--limit N]

Both sides judge every document with datatrove's GopherQualityFilter,
GopherRepetitionFilter, C4QualityFilter (filter_no_terminal_punct false, as in the
default config) and FineWebQualityFilter, words split per document language (lid176's,
computed once before either clock starts):
  datatrove  one process: the four filters of each language with datatrove's own word
             tokenizers (spaCy's blank pipelines), one Document per row, as its
             pipeline runs them
  thresher   one process: the heuristics stage (engine fast) on Arrow batches of 256
             rows, which gives the same filters models/words.py's tokenizer
Loading spaCy's pipelines is inside both clocks (each side loads them when it first
meets a language). Each side is one core. Peak RSS is the child process tree's.
Agreement: each filter's reason per document, compared; the differences are listed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.child import measure_child  # noqa: E402

FILTER_ARGS = {"c4": {"filter_no_terminal_punct": False}}
BATCH = 256


def load(input_dir: str, limit: int | None):
    import pyarrow.dataset as ds

    table = ds.dataset(input_dir).to_table(columns=["id", "text"])
    if limit:
        table = table.slice(0, limit)
    return table


def datatrove_side(table, langs: list[str]) -> dict:
    from datatrove.data import Document

    from thresher.models.words import datatrove_tokenizer
    from thresher.stages.heuristics import FILTERS, _filter_classes

    classes = _filter_classes()
    filters: dict = {}
    reasons = {name: [] for name in FILTERS}
    start = time.perf_counter()
    for text, lang in zip(table.column("text").to_pylist(), langs):
        for name in FILTERS:
            key = (name, lang)
            if key not in filters:
                filters[key] = classes[name](language=datatrove_tokenizer(lang),
                                             **FILTER_ARGS.get(name, {}))
            result = filters[key].filter(Document(text=text, id=""))
            reasons[name].append(None if result is True else result[1])
    return {"seconds": time.perf_counter() - start, "reasons": reasons}


def thresher_side(table, langs: list[str]) -> dict:
    import pyarrow as pa

    from thresher.stages.heuristics import FILTERS, HeuristicFilters

    table = table.append_column("lang", pa.array(langs, pa.string()))
    start = time.perf_counter()
    stage = HeuristicFilters(engine="fast", **FILTER_ARGS)
    outs = [stage(table.slice(i, BATCH)) for i in range(0, table.num_rows, BATCH)]
    seconds = time.perf_counter() - start
    reasons = {name: [r for out in outs
                      for r in out.column(f"heuristics_{name}_reason").to_pylist()]
               for name in FILTERS}
    return {"seconds": seconds, "reasons": reasons}


def child(side: str, args) -> None:
    table = load(args.input, args.limit)
    langs = json.loads(Path(args.langs).read_text())
    result = (datatrove_side if side == "datatrove" else thresher_side)(table, langs)
    Path(args.reasons).write_text(json.dumps(result.pop("reasons")))
    print(json.dumps({"docs": table.num_rows, **result}))


def languages(table) -> list[str]:
    from thresher.models.langid import FastTextLID
    from thresher.models.registry import resolve

    return FastTextLID(resolve("lid176")).predict(table.column("text").to_pylist())[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default="data/demo-crawl")
    parser.add_argument("--limit", type=int, default=None, help="first N documents only")
    parser.add_argument("--show", type=int, default=10, help="differences listed per filter")
    parser.add_argument("--child", choices=["datatrove", "thresher"])
    parser.add_argument("--langs")
    parser.add_argument("--reasons")
    args = parser.parse_args()
    if args.child:
        return child(args.child, args)

    table = load(args.input, args.limit)
    langs = languages(table)
    results, reasons = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "langs.json").write_text(json.dumps(langs))
        for side in ("datatrove", "thresher"):
            out = Path(tmp) / f"{side}.json"
            command = [sys.executable, __file__, "--child", side, "--input", args.input,
                       "--langs", str(Path(tmp) / "langs.json"), "--reasons", str(out)]
            if args.limit:
                command += ["--limit", str(args.limit)]
            results[side] = measure_child(command, side)
            reasons[side] = json.loads(out.read_text())
    docs = results["datatrove"]["docs"]
    print(f"\n{docs} documents of {args.input}, {len(set(langs))} languages; one core each\n")
    print(f"{'side':<10} {'seconds':>8} {'docs/s':>8} {'peak RSS MB':>12}")
    for side, r in results.items():
        rate = docs / r["seconds"]
        print(f"{side:<10} {r['seconds']:>8.1f} {rate:>8.0f} {r['peak_rss_mb']:>12.0f}")
    print(f"\nthresher / datatrove speed: "
          f"{results['datatrove']['seconds'] / results['thresher']['seconds']:.2f}x\n")
    print(f"{'filter':<18} {'agree':>8} {'differ':>7} {'dropped':>8}")
    ids = table.column("id").to_pylist()
    listed = []
    for name, ref in reasons["datatrove"].items():
        ours = reasons["thresher"][name]
        differ = [i for i, (a, b) in enumerate(zip(ours, ref)) if a != b]
        dropped = sum(r is not None for r in ref)
        print(f"{name:<18} {100 * (1 - len(differ) / docs):>7.3f}% {len(differ):>7} {dropped:>8}")
        listed += [f"  {name} {ids[i]}: thresher {ours[i]!r}, datatrove {ref[i]!r}"
                   for i in differ[:args.show]]
    print("\ndifferences:" if listed else "\ndifferences: none")
    print("\n".join(listed))


if __name__ == "__main__":
    main()
