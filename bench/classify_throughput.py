"""The classify stage against the bare library call on the same documents, one core,
models loaded outside the clock on both sides.

  python bench/classify_throughput.py [--input data/demo-crawl] [--docs 20000] [--bert-docs 2000]

fastText: the default quality classifier (models-data/quality/model.bin, `make
setup`), the stage on Arrow batches of 256 against `model.predict` on the same texts
(newlines as spaces), one list per batch of 256. transformers: a BERT sequence
classifier of BERT-small's shape (4 layers, 512 wide) with random weights, saved to a
temporary folder, cut at 512 tokens; the stage (length-sorted batches of 32) against
the same model called on batches of 32 in input order (as a user would call it
without sorting) and on the same length-sorted batches (the stage's own overhead).
Rows per second.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def bert_folder(folder: Path, texts: list[str]) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    words = sorted({w.lower() for t in texts[:2000] for w in t.split() if w.isalpha()})[:20000]
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                                 *words]) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words) + 5, hidden_size=512, num_hidden_layers=4,
                        num_attention_heads=8, intermediate_size=2048, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(str(folder))
    return folder


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(ROOT / "data" / "demo-crawl"))
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--bert-docs", type=int, default=400)
    args = parser.parse_args()
    import fasttext
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from thresher.models.registry import resolve_dir
    from thresher.stages.classify import Classify

    torch.set_num_threads(1)
    docs = pa.concat_tables([pq.read_table(p, columns=["id", "text"])
                             for p in sorted(Path(args.input).glob("*.parquet"))])
    docs = docs.slice(0, args.docs)
    texts = docs.column("text").to_pylist()
    rows = []

    model_path = resolve_dir("quality-default") / "model.bin"
    stage = Classify(model=str(model_path), label="hq").ready()
    bare = fasttext.load_model(str(model_path))
    ours = timed(lambda: [stage(docs.slice(i, 256)) for i in range(0, docs.num_rows, 256)])
    theirs = timed(lambda: [bare.predict([t.replace("\n", " ") for t in texts[i:i + 256]], k=-1)
                            for i in range(0, len(texts), 256)])
    rows.append(("fastText quality-default", docs.num_rows, ours, theirs, "model.predict"))

    with tempfile.TemporaryDirectory() as tmp:
        folder = bert_folder(Path(tmp), texts)
        part = docs.slice(0, args.bert_docs)
        stage = Classify(model=str(folder), engine="transformers", batch_size=32).ready()
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
        part_texts = part.column("text").to_pylist()

        def bare_bert(texts):
            for i in range(0, len(texts), 32):
                encoded = tokenizer(texts[i:i + 32], padding="longest", truncation=True,
                                    max_length=512, return_tensors="pt")
                with torch.inference_mode():
                    model(**encoded)
        ours = timed(lambda: [stage(part.slice(i, 256)) for i in range(0, part.num_rows, 256)])
        in_order = timed(lambda: bare_bert(part_texts))
        by_length = [t for i in range(0, len(part_texts), 256)
                     for t in sorted(part_texts[i:i + 256], key=len, reverse=True)]
        sorted_s = timed(lambda: bare_bert(by_length))
        name = "BERT-small shape, random weights"
        rows.append((name, part.num_rows, ours, in_order, "model(**tokenizer(32 in input order))"))
        rows.append((name, part.num_rows, ours, sorted_s,
                     "model(**tokenizer(32 sorted by length, as the stage))"))

    print("\nclassify against the bare library call, one core, models loaded outside the clock\n")
    print("| model | docs | stage s | stage docs/s | bare call | bare s | bare docs/s | stage / bare speed |")
    print("|---|---|---|---|---|---|---|---|")
    for name, n, ours, theirs, call in rows:
        print(f"| {name} | {n:,} | {ours:.2f} | {n / ours:,.0f} | {call} | {theirs:.2f} | "
              f"{n / theirs:,.0f} | {theirs / ours:.2f}x |")


if __name__ == "__main__":
    main()
