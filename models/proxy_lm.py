"""The proxy model Aioli trains to measure how groups of data help each other: a
small causal Transformer in PyTorch (CPU by default, CUDA when there is one), sized
by config. It reads bytes (a vocabulary of 256), or with `tokenizer` set the ids of
that tokenizer (models/tokenizer.py; its whole vocabulary), so that it sees text as
a model trained on the tokenized training shards does.

Per-group validation loss is the mean over the group's validation sequences of each
sequence's mean token loss, as in the paper. It trains as the authors do: AdamW
(weight decay 0.01), a linear warm-up, then cosine decay over the whole budget, and
gradient clipping at 1.0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

VOCAB = 256  # bytes
# Logits computed at once when scoring held-out windows: a 49k-token vocabulary
# makes 128 windows of 64 tokens 1.6 GB of logits.
SCORE_LOGITS = 1 << 24


@dataclass(frozen=True)
class ProxySettings:
    context: int = 128
    width: int = 128
    layers: int = 2
    heads: int = 4
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int | None = None  # None: a tenth of total_steps, at most 500
    total_steps: int | None = None  # the cosine's length; None: constant after warm-up
    min_lr_ratio: float = 0.1  # where the cosine ends, as a share of lr
    clip: float = 1.0
    # Windows per group for validation and test: 5-step loss differences are small,
    # and 16 windows were noise.
    val_sequences: int = 128
    device: str = "auto"
    threads: int | None = None
    tokenizer: str | None = None  # a tokenizer name (models/tokenizer.py); None: bytes

    @property
    def warmup(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(500, (self.total_steps or 0) // 10)

    def lr_at(self, step: int) -> float:
        """The learning rate of step `step` (0-based)."""
        import math

        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if not self.total_steps:
            return self.lr
        progress = min(1.0, (step - self.warmup) / max(1, self.total_steps - self.warmup))
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine)


def encode(texts: list[str], min_len: int, tokenizer=None) -> list[np.ndarray]:
    """UTF-8 bytes (or the tokenizer's ids) of each text, dropping those too short for
    one sequence."""
    if tokenizer is None:
        arrays = [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]
    else:
        arrays = tokenizer.encode(texts)
    return [a for a in arrays if len(a) >= min_len]


class ProxyTrainer:
    """A Trainer (models/aioli.py) over groups of texts: trains one proxy model on
    mixtures of the groups and reports per-group validation (or test) losses."""

    def __init__(self, train: dict[str, list[str]], val: dict[str, list[str]],
                 settings: ProxySettings = ProxySettings(), seed: int = 0):
        import torch

        self.torch = torch
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.s = settings
        self.groups = sorted(train)
        self.tokenizer = None
        if settings.tokenizer:
            from thresher.models.tokenizer import load_tokenizer

            self.tokenizer = load_tokenizer(settings.tokenizer)
        self.vocab = self.tokenizer.vocab_size if self.tokenizer else VOCAB
        self.unit = "tokens" if self.tokenizer else "bytes"
        need = settings.context + 1
        self.train_docs = {g: encode(train[g], need, self.tokenizer) for g in self.groups}
        empty = [g for g, docs in self.train_docs.items() if not docs]
        if empty:
            raise ValueError(f"groups {empty} have no training text of at least {need} "
                             f"{self.unit}")
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") \
            if settings.device == "auto" else settings.device
        self.model = _build(settings, self.vocab).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=settings.lr,
                                           weight_decay=settings.weight_decay)
        self.val = self.fixed_sequences(val)
        self.steps = 0

    def fixed_sequences(self, texts: dict[str, list[str]]) -> dict[str, "object"]:
        """Up to val_sequences windows per group, fixed: the successive windows of each
        held-out document in turn, so that few documents still give many windows."""
        size = self.s.context + 1
        out = {}
        for g in self.groups:
            windows = [d[i:i + size] for d in encode(texts.get(g, []), size, self.tokenizer)
                       for i in range(0, len(d) - size + 1, size)][: self.s.val_sequences]
            if not windows:
                raise ValueError(f"group {g!r} has no held-out text of at least {size} "
                                 f"{self.unit}")
            if len(windows) < self.s.val_sequences:
                log.warning("group %r: %d held-out windows, fewer than val_sequences=%d; "
                            "small loss differences are noise there (raise docs_per_group)",
                            g, len(windows), self.s.val_sequences)
            out[g] = self.torch.tensor(np.stack(windows), dtype=self.torch.long,
                                       device=self.device)
        return out

    def train(self, p: np.ndarray, steps: int) -> None:
        torch = self.torch
        self.model.train()
        for _ in range(steps):
            groups = self.rng.choice(len(self.groups), size=self.s.batch_size, p=p)
            batch = np.stack([self._window(self.groups[g]) for g in groups])
            tokens = torch.tensor(batch, dtype=torch.long, device=self.device)
            logits = self.model(tokens[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, self.vocab),
                                                     tokens[:, 1:].reshape(-1))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.s.clip)
            for group in self.optimizer.param_groups:
                group["lr"] = self.s.lr_at(self.steps)
            self.optimizer.step()
            self.steps += 1

    def _window(self, group: str) -> np.ndarray:
        docs = self.train_docs[group]
        doc = docs[self.rng.integers(len(docs))]
        start = self.rng.integers(len(doc) - self.s.context)
        return doc[start:start + self.s.context + 1]

    def losses(self, sequences: dict | None = None) -> np.ndarray:
        """Per group: the mean over sequences of each sequence's mean token loss."""
        torch = self.torch
        sequences = sequences or self.val
        self.model.eval()
        out = []
        with torch.inference_mode():
            for g in self.groups:
                per_sequence = torch.cat([self._sequence_losses(chunk) for chunk in
                                          sequences[g].split(self._score_chunk())])
                out.append(per_sequence.mean().item())
        return np.array(out)

    def _score_chunk(self) -> int:
        """Windows scored at once: all of them for bytes, a few for a large vocabulary."""
        return max(1, SCORE_LOGITS // (self.s.context * self.vocab))

    def _sequence_losses(self, tokens):
        """Each window's mean token loss."""
        logits = self.model(tokens[:, :-1])
        per_token = self.torch.nn.functional.cross_entropy(
            logits.reshape(-1, self.vocab), tokens[:, 1:].reshape(-1), reduction="none")
        return per_token.view(tokens.shape[0], -1).mean(dim=1)


def _build(s: ProxySettings, vocab: int):
    import torch
    from torch import nn

    class ProxyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, s.width)
            self.position = nn.Embedding(s.context, s.width)
            layer = nn.TransformerEncoderLayer(s.width, s.heads, 4 * s.width, dropout=0.0,
                                               batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, s.layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(s.width)
            self.head = nn.Linear(s.width, vocab, bias=False)
            self.head.weight = self.embed.weight  # tied
            # GPT-2's and Pythia's scale: torch's default N(0, 1) for the tied embedding
            # makes the first logits huge, and the first loss several times that of
            # guessing uniformly (39.9 per byte, 42.8 per SmolLM2 token, against 5.5
            # and 10.8), which a short budget spends its first steps undoing.
            nn.init.normal_(self.embed.weight, std=0.02)
            nn.init.normal_(self.position.weight, std=0.02)
            self.register_buffer("causal", torch.triu(
                torch.full((s.context, s.context), float("-inf")), diagonal=1))

        def forward(self, tokens):
            n = tokens.shape[1]
            x = self.embed(tokens) + self.position(torch.arange(n, device=tokens.device))
            x = self.blocks(x, mask=self.causal[:n, :n], is_causal=True)
            return self.head(self.norm(x))

    return ProxyLM()
