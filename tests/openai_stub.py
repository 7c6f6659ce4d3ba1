"""A small OpenAI-compatible server on 127.0.0.1 for the remote backend's error paths: what real
engines do only by accident (an HTTP 500 for one prompt, a reply slow enough to interrupt) it does
on request, and it counts what the client did (requests, the most streams open at once, streams
the client closed before the end).

Streaming chat completions only; the reply to a user message ``M`` is ``echo: M`` in three chunks.
A message containing ``FAIL400`` gets HTTP 400, ``FAIL500`` HTTP 500, ``SLOW`` a reply of 400
chunks 50 ms apart, ``CUT`` two chunks and then a closed connection (a server that died). ``owned_by`` is "stub": an engine llmcli does not know."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Stub:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.active = 0
        self.max_active = 0
        self.disconnects = 0
        self.bodies: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _json(self, status: int, obj) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": "stub-model", "object": "model",
                                                                 "owned_by": "stub", "created": 0}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with stub.lock:
                    stub.requests += 1
                    stub.bodies.append(body)
                if self.path != "/v1/chat/completions":
                    self._json(404, {"error": {"message": "not found"}})
                    return
                text = body["messages"][-1]["content"]
                if "FAIL400" in text:
                    self._json(400, {"error": {"message": "the stub refuses this prompt", "type": "invalid_request"}})
                    return
                if "FAIL500" in text:
                    self._json(500, {"error": {"message": "the stub broke"}})
                    return
                pieces = ["x "] * 400 if "SLOW" in text else ["echo", ": ", text]
                delay = 0.05 if "SLOW" in text else 0.1
                with stub.lock:
                    stub.active += 1
                    stub.max_active = max(stub.max_active, stub.active)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for piece in pieces[:2] if "CUT" in text else pieces:
                        time.sleep(delay)
                        self._event({"delta": {"content": piece}, "finish_reason": None})
                    if "CUT" in text:
                        return
                    self._event({"delta": {}, "finish_reason": "stop"})
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    with stub.lock:
                        stub.disconnects += 1
                finally:
                    with stub.lock:
                        stub.active -= 1
                self.close_connection = True

            def _event(self, choice: dict) -> None:
                chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "stub-model",
                         "choices": [{"index": 0, **choice}]}
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
