"""Small KenLMs trained by the tests themselves (needs lmplz: `make setup`)."""

from pathlib import Path

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
