"""A small OpenAI-compatible chat server over the transformers engine.

    thresher models serve-llm --model smollm2-135m-instruct --port 8011

For machines without vLLM: it lets several pipeline workers share one loaded model,
and it is the real server the HTTP backend is tested against. It serves
POST /v1/chat/completions and GET /v1/models, one request at a time (the model is
not thread-safe); for throughput on GPUs use `vllm serve`.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from thresher.models.llm import Sampling

log = logging.getLogger(__name__)


def make_server(engine, host: str = "127.0.0.1", port: int = 8011) -> ThreadingHTTPServer:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            log.debug("serve-llm: " + fmt, *args)

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                self._reply(200, {"object": "list", "data": [{"id": engine.name,
                                                              "object": "model"}]})
            else:
                self._reply(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._reply(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                messages = body["messages"]
                sampling = Sampling(temperature=float(body.get("temperature", 0.0)),
                                    top_p=float(body.get("top_p", 1.0)),
                                    max_new_tokens=int(body.get("max_tokens", 256)),
                                    seed=int(body.get("seed", 0) or 0))
            except (ValueError, KeyError, TypeError) as err:
                self._reply(400, {"error": {"message": f"bad request: {err}"}})
                return
            with lock:
                [result] = engine.generate([messages], sampling)
            self._reply(200, {
                "object": "chat.completion", "model": engine.name,
                "choices": [{"index": 0,
                             "finish_reason": "length" if result.truncated_output else "stop",
                             "message": {"role": "assistant", "content": result.text}}],
                "usage": {"prompt_tokens": result.prompt_tokens,
                          "completion_tokens": result.completion_tokens,
                          "total_tokens": result.prompt_tokens + result.completion_tokens}})

    return ThreadingHTTPServer((host, port), Handler)
