"""The checks of bench/gpu_smoke.sh, one line each (PASS/FAIL name: what was seen).

1. teacher-engine: DataMan's teacher through the in-process vLLM engine: every
   document answered, none cut twice (the cut document and the prompt fit the input
   limit, so the engine cuts nothing more), the answers' parse rate, and no answer
   marked truncated that parsed.
2. teacher-processor: the same through ray.data.llm (Ray's tokenizer stages off, token
   ids sent): every row answered, same parse rate.
3. wrap-system-turn: WRAP's request (a system turn) on a model whose template refuses
   one: answered, not an error.
4. watchdog-restart: an actor whose engine is ended by the watchdog is restarted by Ray,
   loads again, and finds the GPU memory the first engine held freed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from gpu_llm_check import build_tiny_model  # noqa: E402

NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}"
             "{{ raise_exception('System role not supported') }}{% endif %}"
             "<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
             "{% if add_generation_prompt %}<|assistant|> {% endif %}")
failures: list[str] = []


def report(name: str, ok: bool, seen: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'} {name}: {seen}", flush=True)
    if not ok:
        failures.append(name)


def documents(n: int) -> list[str]:
    return [" ".join(f"w{(i * 13 + j) % 2000}" for j in range(50 + (i * 37) % 3000))
            for i in range(n)]


def limits(real: bool) -> tuple[int, int]:
    """(max_model_len, the document cut): the shipped ones for a DataMan model; the tiny
    model has 1,024 positions."""
    return (2304, 1894) if real else (1024, 700)


def teacher_engine(model: str, real: bool) -> float:
    from thresher.models.dataman import STATUS_OK, rate
    from thresher.models.llm import load_engine

    length, cut = limits(real)
    engine = load_engine({"engine": "vllm", "model": model, "max_model_len": length,
                          "gpu_memory_utilization": 0.4, "batch_size": 64})
    texts = documents(64)
    ratings, generations = rate(engine, texts, "dataman" if real else "instruct", None, cut)
    fits = all(g.prompt_tokens <= length - 64 and not g.truncated_prompt for g in generations)
    parsed = sum(r.status == STATUS_OK for r in ratings) / len(ratings)
    lying = sum(g.truncated_output and r.status == STATUS_OK
                for r, g in zip(ratings, generations))
    report("teacher-engine", len(generations) == len(texts) and fits and
           (lying == 0 or not real) and (parsed > 0.9 or not real),
           f"{len(generations)} answers, prompts within the limit: {fits}, parse rate "
           f"{parsed:.2f}, parsed yet marked truncated: {lying}")
    return parsed


def teacher_processor(model: str, real: bool) -> None:
    from transformers import AutoTokenizer

    from thresher.models.dataman import parse_answer, requests_for, sampling_for
    from thresher.models.llm import end_of_turn_ids, fit_conversation
    from thresher.pipeline.engine import ray_llm as processor

    tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
    texts = documents(64)
    fmt = "dataman" if real else "instruct"
    length, cut = limits(real)
    requests = [fit_conversation(r, tokenizer, length - 64)[0]
                for r in requests_for(texts, tokenizer, fmt, cut)]
    rows = processor.generate_rows(
        {"engine": "vllm", "model": model, "max_model_len": length,
         "gpu_memory_utilization": 0.4, "concurrency": 1},
        requests, sampling_for(fmt, None, end_of_turn_ids(tokenizer)), tokenizer=tokenizer)
    errors = [r["error"] for r in rows if r["error"]]
    parsed = sum(parse_answer(r["text"]).status == "ok" for r in rows) / len(rows)
    report("teacher-processor", not errors and (parsed > 0.9 or not real),
           f"{len(rows) - len(errors)} of {len(rows)} answered, parse rate {parsed:.2f}"
           + (f"; first error: {errors[0][:200]}" if errors else ""))


def wrap_system_turn(folder: Path) -> None:
    from transformers import AutoTokenizer

    from thresher.models.llm import Sampling, load_engine
    from thresher.models.wrap import build_request

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = NO_SYSTEM
    tokenizer.save_pretrained(folder)
    engine = load_engine({"engine": "vllm", "model": str(folder), "max_model_len": 1024,
                          "gpu_memory_utilization": 0.3})
    request = build_request("w1 w2 w3 the river city", "medium", ())
    has_system = any(m["role"] == "system" for m in request)
    try:
        [made] = engine.generate([request], Sampling(max_new_tokens=16))
        report("wrap-system-turn", has_system and made.completion_tokens > 0,
               f"a system turn sent: {has_system}; answered with {made.completion_tokens} "
               "tokens")
    except Exception as err:  # noqa: BLE001 - the check reports any failure
        report("wrap-system-turn", False, f"{type(err).__name__}: {err}")


def watchdog_restart(folder: Path) -> None:
    import ray

    class Holder:
        def __init__(self, model: str):
            import torch

            from thresher.models.llm import load_engine

            self.before = torch.cuda.mem_get_info()[0]
            self.engine = load_engine({"engine": "vllm", "model": model, "max_model_len": 512,
                                       "gpu_memory_utilization": 0.3})

        def free_before_load(self) -> int:
            return int(self.before)

        def hang(self) -> None:
            from thresher.models.llm.watchdog import deadline

            with deadline(1, "a batch that hangs"):
                time.sleep(60)

    actor = ray.remote(num_gpus=1, max_restarts=1, max_task_retries=0)(Holder).remote(
        str(folder))
    first = ray.get(actor.free_before_load.remote())
    try:
        ray.get(actor.hang.remote())
        report("watchdog-restart", False, "the hanging call returned")
        return
    except ray.exceptions.RayActorError:
        pass
    second = ray.get(actor.free_before_load.remote(), timeout=300)  # the restarted actor
    freed = second >= first * 0.95
    report("watchdog-restart", freed, f"free GPU memory before the first load "
           f"{first / 2**30:.1f} GiB, before the restarted load {second / 2**30:.1f} GiB")


CHECKS = {"teacher-engine": lambda model, real, tiny: teacher_engine(model, real),
          "teacher-processor": lambda model, real, tiny: teacher_processor(model, real),
          "wrap-system-turn": lambda model, real, tiny: wrap_system_turn(tiny),
          "watchdog-restart": lambda model, real, tiny: watchdog_restart(tiny)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a DataMan model folder (else a tiny random model)")
    parser.add_argument("--check", choices=sorted(CHECKS), help=argparse.SUPPRESS)
    parser.add_argument("--tiny", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.check:  # one check, in a process of its own: its GPU memory goes with it
        return run_one(args)
    import torch

    if not torch.cuda.is_available():
        report("gpu", False, "no CUDA device")
        return 1
    report("gpu", True, torch.cuda.get_device_name())
    with tempfile.TemporaryDirectory() as tmp:
        tiny = Path(tmp) / "tiny"
        build_tiny_model(tiny)
        for name in CHECKS:
            command = [sys.executable, __file__, "--check", name, "--tiny", str(tiny)] + \
                (["--model", args.model] if args.model else [])
            try:
                done = subprocess.run(command, timeout=240)
                if done.returncode:
                    failures.append(name)
            except subprocess.TimeoutExpired:
                report(name, False, "did not finish within 240 s")
    print(f"{len(CHECKS) - len(failures)} of {len(CHECKS)} checks passed"
          + (f"; failed: {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


def run_one(args) -> int:
    import ray

    ray.init(num_gpus=1, include_dashboard=False, log_to_driver=False)
    model, real = (args.model, True) if args.model else (args.tiny, False)
    try:
        CHECKS[args.check](model, real, Path(args.tiny))
    except Exception as err:  # noqa: BLE001 - a check's crash is its failure
        report(args.check, False, f"{type(err).__name__}: {str(err)[:300]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
