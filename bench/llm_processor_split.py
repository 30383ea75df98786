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
import ray

class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(random.random() * 0.05)
        data = json.dumps({"choices": [{"message": {"content": body["messages"][0]["content"]},
                                        "finish_reason": "stop"}], "usage": {}}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)

server = ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=server.serve_forever, daemon=True).start()
ray.init(num_cpus=2, include_dashboard=False, _temp_dir=f"/tmp/thresher-probe-{os.getuid()}", log_to_driver=False)
from ray.data.llm import HttpRequestProcessorConfig, build_processor
cfg = HttpRequestProcessorConfig(url=f"http://127.0.0.1:{server.server_port}/v1/chat/completions",
                                 batch_size=16, concurrency=2)
proc = build_processor(cfg, preprocess=lambda r: {**r, "payload": {"model": "m", "messages": [
    {"role": "user", "content": f"{r['doc']}:{r['chunk']}"}]}},
    postprocess=lambda r: {"doc": r["doc"], "chunk": r["chunk"]})
rows = [{"doc": d, "chunk": c} for d in range(40) for c in range(5)]
ds = proc(ray.data.from_items(rows, override_num_blocks=4))
batches = [b for b in ds.iter_batches(batch_size=64, batch_format="pandas")]
where = {}
for i, b in enumerate(batches):
    for d in b["doc"]:
        where.setdefault(int(d), set()).add(i)
split = sum(len(v) > 1 for v in where.values())
order = [(int(d), int(c)) for b in batches for d, c in zip(b["doc"], b["chunk"])]
print(f"{len(batches)} downstream batches of up to 64 rows; {split} of 40 documents have "
      f"chunks in more than one batch; rows in input order: {order == sorted(order)}")
ray.shutdown()
