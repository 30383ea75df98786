"""Check the Aioli proxy LM on CUDA, on bytes and on a tokenizer's ids, without downloads.

  python bench/gpu_proxy_check.py --texts sample.parquet --tokenizer TOKENIZER_FOLDER \
      [--steps 200] [--devices cuda cpu] [--no-aioli]

sample.parquet: columns `text` and `group` (e.g. curated documents and their `lang`);
TOKENIZER_FOLDER: a Hugging Face tokenizer folder (SmolLM2's, saved from its GGUF:
`AutoTokenizer.from_pretrained(folder, gguf_file=...).save_pretrained(out)`).
For each unit (bytes, tokens) and device it trains the default config's proxy shape
for --steps steps on a uniform mixture and prints ms a step, the held-out loss before
and after, and where the weights live; then one Aioli run (2 rounds of the paper's
m=3 setting) on the token proxy on the first device. Exits 1 when a loss does not
fall or is not finite.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def groups_of(path: str) -> tuple[dict, dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(path).to_pylist()
    train, val = {}, {}
    for i, row in enumerate(table):
        (val if i % 10 == 0 else train).setdefault(row["group"], []).append(row["text"])
    return train, val


def check(unit: str, device: str, train, val, tokenizer: str | None, steps: int) -> bool:
    from thresher.models.proxy_lm import ProxySettings, ProxyTrainer

    settings = ProxySettings(context=64, width=64, layers=2, heads=4, batch_size=8, lr=0.003,
                             total_steps=steps, device=device, tokenizer=tokenizer)
    trainer = ProxyTrainer(train, val, settings, seed=0)
    p = np.ones(len(trainer.groups)) / len(trainer.groups)
    before = trainer.losses(trainer.val)
    trainer.train(p, 5)  # warm-up: CUDA kernels, allocator
    if device == "cuda":
        trainer.torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train(p, steps)
    if device == "cuda":
        trainer.torch.cuda.synchronize()
    ms = 1000 * (time.perf_counter() - start) / steps
    after = trainer.losses(trainer.val)
    where = next(trainer.model.parameters()).device
    ok = bool(np.all(np.isfinite(after)) and np.mean(after) < np.mean(before))
    print(f"{unit:<7} {device:<5} vocab {trainer.vocab:>6}  {ms:8.2f} ms/step  held-out loss "
          f"{np.mean(before):.3f} -> {np.mean(after):.3f}  weights on {where}  "
          f"{'ok' if ok else 'FAILED'}")
    return ok


def aioli(device: str, train, val, tokenizer: str) -> bool:
    from thresher.models.aioli import AioliSettings, run_aioli
    from thresher.models.proxy_lm import ProxySettings, ProxyTrainer

    settings = AioliSettings(total_steps=500, round_steps=250, lp_rounds=4, lp_steps=6, ohf=0.5,
                             eta=0.1, gamma=0.5, seed=0)
    proxy = ProxySettings(context=64, width=64, layers=2, heads=4, batch_size=8, lr=0.003,
                          total_steps=500, device=device, tokenizer=tokenizer)
    trainer = ProxyTrainer(train, val, proxy, seed=0)
    start = time.perf_counter()
    trace = run_aioli(trainer, settings)
    seconds = time.perf_counter() - start
    losses = np.array(trace.losses[-1])
    ok = bool(np.all(np.isfinite(losses)) and abs(sum(trace.p[-1]) - 1) < 1e-6)
    print(f"aioli on tokens, {device}: {seconds:.1f} s for 500 steps; groups {trainer.groups}; "
          f"final p {np.round(trace.p[-1], 3).tolist()}; val losses {np.round(losses, 3).tolist()}"
          f"  {'ok' if ok else 'FAILED'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"])
    parser.add_argument("--no-aioli", action="store_true", help="skip the Aioli run")
    args = parser.parse_args()
    train, val = groups_of(args.texts)
    print(f"groups: { {g: len(t) for g, t in train.items()} } training documents")
    ok = True
    for device in args.devices:
        for unit, tokenizer in (("bytes", None), ("tokens", args.tokenizer)):
            ok &= check(unit, device, train, val, tokenizer, args.steps)
    if not args.no_aioli:
        ok &= aioli(args.devices[0], train, val, args.tokenizer)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
