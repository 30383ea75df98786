"""Small models trained by the tests themselves: KenLMs (needs lmplz: `make setup`),
a fastText classifier and a random-weight BERT classifier."""

import glob
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher.pipeline.io import demo_crawl
from thresher.models.train_lm import train_lm


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """An English cc_net-layout lm_dir trained on part of gensim's Wikipedia sample."""
    out = tmp_path_factory.mktemp("lm")
    lines = [p for doc in demo_crawl.wikipedia() for p in doc["text"].split("\n") if len(p) > 20]
    corpus = out / "en.txt"
    corpus.write_text("\n".join(lines[:4000]) + "\n", encoding="utf-8")
    train_lm("en", [corpus], out, vocab=2000)
    return out


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_docs() -> pa.Table:
    """600 demo documents (the first shard's first rows) with their source."""
    shard = sorted(glob.glob(str(ROOT / "data" / "demo-crawl" / "*.parquet")))[0]
    return pq.read_table(shard, columns=["id", "text", "source"]).slice(0, 600)


@pytest.fixture(scope="session")
def quality_fasttext(tmp_path_factory, demo_docs) -> Path:
    """A fastText classifier trained on demo text: lq for fortunes and junk pages, hq
    for the rest (the handbook, Wikipedia, Python's docs and sources)."""
    import fasttext

    folder = tmp_path_factory.mktemp("ft")
    lines = []
    for text, source in zip(demo_docs.column("text").to_pylist(),
                            demo_docs.column("source").to_pylist()):
        label = "lq" if source.startswith("junk") or source.startswith("fortunes") else "hq"
        lines.append(f"__label__{label} " + " ".join(text.split()))
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    model = fasttext.train_supervised(str(folder / "train.txt"), epoch=2, wordNgrams=2,
                                      dim=16, thread=1, seed=1, verbose=0)
    model.save_model(str(folder / "quality.bin"))
    return folder / "quality.bin"


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, demo_docs) -> Path:
    """A BERT sequence classifier with random weights and a word-piece vocabulary of
    demo words, saved as a model folder."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("bert")
    words = sorted({w.lower() for t in demo_docs.column("text").to_pylist()[:200]
                    for w in t.split() if w.isalpha()})[:2000]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder / "regression"))
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder / "labels"))
    torch.manual_seed(0)
    small = dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertForSequenceClassification(BertConfig(num_labels=1, **small)).save_pretrained(
        str(folder / "regression"))
    BertForSequenceClassification(BertConfig(
        num_labels=3, id2label={0: "low", 1: "mid", 2: "high"},
        label2id={"low": 0, "mid": 1, "high": 2}, **small)).save_pretrained(str(folder / "labels"))
    return folder
