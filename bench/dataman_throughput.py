"""DataMan rating on CPU: the student's documents/s per core, and the teacher's
tokens/s through the transformers engine vs bare transformers `generate` on the
same prompts, in one process.

  python bench/dataman_throughput.py [--input data/demo-crawl] [--docs 20000]
                                     [--teacher-docs 32] [--student DIR]

  student, thresher   DataManRating.__call__ (15 fastText models + teacher lookup) via
                      apply_stage, batches of 512, one thread
  student, fastText   the 15 fastText models' predict on the same preprocessed lines:
                      the limit
  teacher, thresher   models.dataman.rate(): cut, escape, chat template, length-sorted
                      batches of 8, parse
  teacher, bare       the same cut, escape and chat template, prompts sorted by length,
                      then AutoModelForCausalLM.generate in batches of 8, greedy, same
                      max_new_tokens; all of it timed (no parse)
The student comes from --student, else OUT/calibration/dataman/student of `make
curate` (out/demo), else one is trained here on synthetic labels (speed only).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # per core for the student

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers import bare_generate  # noqa: E402
from thresher.models.dataman import RATINGS, rate  # noqa: E402
from thresher.models.dataman_student import DataManStudent, student_text, train_student  # noqa: E402
from thresher.pipeline.engine.apply import apply_stage  # noqa: E402
from thresher.stages.dataman import DataManRating  # noqa: E402


def load(inputs: str, limit: int) -> pa.Table:
    table = pq.read_table(sorted(Path(inputs).glob("part-*.parquet")), columns=["id", "text"])
    table = table.filter(pa.compute.greater(pa.compute.utf8_length(table["text"]), 0))
    table = table.slice(0, limit)
    n = table.num_rows
    return table.append_column("_error", pa.nulls(n, pa.string())).append_column(
        "_pre", pa.nulls(n, pa.string()))


def student_folder(given: str | None, table: pa.Table) -> Path:
    for candidate in [given, "out/demo/calibration/dataman/student"]:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    out = Path("bench/results/dataman-student")
    rows = [{"id": r["id"], "text": r["text"], "dataman_status": "ok",
             "dataman_domain": "ABCDE"[i % 5], **{f"dataman_{k}": 1 + i % 5 for k in RATINGS}}
            for i, r in enumerate(table.slice(0, 500).select(["id", "text"]).to_pylist())]
    train_student(pa.Table.from_pylist(rows), out)
    return out


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_student(table: pa.Table, folder: Path) -> list[tuple]:
    stage = DataManRating(student=str(folder), teacher_sample=0)
    stage.setup()
    seconds = timed(lambda: [apply_stage(stage, table.slice(s, 512))
                             for s in range(0, table.num_rows, 512)])
    models = DataManStudent(folder).models
    lines = [student_text(t) for t in table.column("text").to_pylist()]
    kernel = timed(lambda: [m.predict(lines, k=1) for m in models.values()])
    mb = sum(len(t.encode()) for t in table.column("text").to_pylist()) / 1e6
    n = table.num_rows
    return [("student", "thresher stage", n, seconds, n / seconds, mb / seconds, seconds / kernel),
            ("student", "fastText predict x15", n, kernel, n / kernel, mb / kernel, 1.0)]


def bench_teacher(texts: list[str], threads: int) -> list[tuple]:
    import torch

    from thresher.models.dataman import build_request, cut, sampling_for
    from thresher.models.llm import load_engine, special_markers

    torch.set_num_threads(threads)
    engine = load_engine({"engine": "transformers", "model": "smollm2-135m-instruct",
                          "device": "cpu", "batch_size": 8})
    engine.generate([[{"role": "user", "content": "hi"}]])  # warm-up
    started = time.perf_counter()
    ratings, generations = rate(engine, texts, "instruct", max_tokens=512)
    ours = time.perf_counter() - started
    ours_tokens = sum(g.completion_tokens for g in generations)

    tok, model = engine.tokenizer, engine.model
    started = time.perf_counter()  # the peer builds its prompts on the clock too
    markers = special_markers(tok)
    prompts = [tok.apply_chat_template(build_request(cut(t, tok, max_tokens=512)[0], "instruct",
                                                     markers),
                                       tokenize=False, add_generation_prompt=True) for t in texts]
    prompts.sort(key=len)  # and batches them by length, as thresher's engine does
    bare_tokens, _ = bare_generate(tok, model, prompts, sampling_for("instruct").max_new_tokens)
    bare = time.perf_counter() - started
    parsed = sum(r.status == "ok" for r in ratings)
    n = len(texts)
    print(f"teacher: {parsed}/{n} answers parsed; {threads} threads")
    return [("teacher", "thresher rate()", n, ours, ours_tokens / ours, None, None),
            ("teacher", "bare transformers generate", n, bare, bare_tokens / bare, None, None)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default="data/demo-crawl")
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--teacher-docs", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the teacher")
    parser.add_argument("--student")
    args = parser.parse_args()
    table = load(args.input, args.docs)
    rows = bench_student(table, student_folder(args.student, table))
    step = max(1, table.num_rows // args.teacher_docs)
    texts = table.column("text").to_pylist()[::step][: args.teacher_docs]
    rows += bench_teacher(texts, args.threads)
    print("| rater | implementation | docs | s | docs/s or tokens/s | MB/s | vs limit |")
    print("|---|---|---|---|---|---|---|")
    for rater, impl, n, s, rate_, mb, ratio in rows:
        unit = "docs/s" if rater == "student" else "new tokens/s"
        print(f"| {rater} | {impl} | {n:,} | {s:.2f} | {rate_:,.0f} {unit} | "
              f"{'' if mb is None else f'{mb:.2f}'} | {'' if ratio is None else f'{ratio:.2f}x'} |")


if __name__ == "__main__":
    main()
