"""Do the chunk rows of one document stay together through a ray.data.llm processor?

  python bench/llm_processor_split.py

40 documents x 5 chunk requests (WRAP's shape: several prompts a document), through
Ray's HTTP processor (batch 16, 2 workers) against a local server that answers after a
random 0-50 ms; the rows are then read as a downstream operator with batches of 64
would get them. A document whose chunks land in two batches can only be put back
together after a shuffle, or by one consumer that sees every batch in order: this is
why WRAP keeps its engine inside its own actor (docs/models.md).
"""

import json
import os
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
import ray  # noqa: E402

DOCUMENTS, CHUNKS, BATCH = 40, 5, 64


class EchoChat(BaseHTTPRequestHandler):
    """A chat-completions server that answers each request with its own text."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(random.random() * 0.05)
        data = json.dumps({"choices": [{"message": {"content": body["messages"][0]["content"]},
                                        "finish_reason": "stop"}], "usage": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=f"/tmp/thresher-probe-{os.getuid()}")
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    config = HttpRequestProcessorConfig(
        url=f"http://127.0.0.1:{server.server_port}/v1/chat/completions", batch_size=16,
        concurrency=2)
    processor = build_processor(
        config,
        preprocess=lambda r: {**r, "payload": {"model": "m", "messages": [
            {"role": "user", "content": f"{r['doc']}:{r['chunk']}"}]}},
        postprocess=lambda r: {"doc": r["doc"], "chunk": r["chunk"]})
    rows = [{"doc": d, "chunk": c} for d in range(DOCUMENTS) for c in range(CHUNKS)]
    dataset = processor(ray.data.from_items(rows, override_num_blocks=4))
    batches = list(dataset.iter_batches(batch_size=BATCH, batch_format="pandas"))
    seen_in: dict[int, set] = {}
    for i, batch in enumerate(batches):
        for doc in batch["doc"]:
            seen_in.setdefault(int(doc), set()).add(i)
    split = sum(len(where) > 1 for where in seen_in.values())
    order = [(int(d), int(c)) for b in batches for d, c in zip(b["doc"], b["chunk"])]
    print(f"{len(batches)} downstream batches of up to {BATCH} rows; {split} of {DOCUMENTS} "
          f"documents have chunks in more than one batch; rows in input order: "
          f"{order == sorted(order)}")
    ray.shutdown()


if __name__ == "__main__":
    main()
