"""A real HTTP server speaking the OpenAI chat-completions streaming protocol, for tests.

The user message picks the behaviour: "slow", "endless", "fail-mid", "429", "503",
"500", "malformed", "no-done"; anything else streams "Hello guest!". "429 <value>"
(or 503) also sends ``Retry-After: <value>``; ``busy_replies`` answers the next
requests with a 429 or 503 whatever they ask.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[dict[str, Any]] = []
        self.disconnected = threading.Event()
        self.models_status = 200
        #: (status, Retry-After or "") the next streaming requests are answered with first.
        self.busy_replies: list[tuple[str, str]] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-response is part of the tests, not an error.
        pass

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeOpenAI

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._json(self.server.models_status, {"data": [{"id": "fake-model"}]})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"headers": dict(self.headers), "body": body})
        if not body.get("stream"):
            content = "What is a gene?\n- How long do results take?\n3. Is my data safe?\nextra"
            self._json(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})
            return
        scenario = body["messages"][-1]["content"]
        status, _, retry_after = scenario.partition(" ")
        if self.server.busy_replies:
            status, retry_after = self.server.busy_replies.pop(0)
        if status in ("429", "503"):
            # "429 <Retry-After>": the header's value, if any, follows the status.
            headers = {"Retry-After": retry_after} if retry_after else {}
            message = "Rate limit reached for key sk-secret1234567890"
            self._json(int(status), {"error": {"message": message}}, headers)
            return
        if scenario in ("401", "403"):
            message = "Incorrect API key provided: sk-secret1234567890"
            self._json(int(scenario), {"error": {"message": message}})
            return
        if scenario == "500":
            self._json(500, {"error": {"message": "The model crashed\nBearer abc.def"}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._stream(scenario)
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnected.set()

    def _stream(self, scenario: str) -> None:
        if scenario == "malformed":
            self._chunk(b"data: {not json}\n\n")
            self._end()
            return
        tokens = ["Hello", " guest", "!"]
        if scenario == "endless":
            for i in range(10_000):
                self._delta(f" t{i}")
                time.sleep(0.02)
            return
        for i, token in enumerate(tokens):
            if scenario == "fail-mid" and i == 2:
                self.wfile.flush()
                # No terminating chunk: the stream breaks off mid-answer.
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if scenario == "slow":
                time.sleep(0.2)
            self._delta(token)
        if scenario != "no-done":
            self._delta("", finish="stop")
            self._chunk(b"data: [DONE]\n\n")
        self._end()

    def _delta(self, text: str, finish: str | None = None) -> None:
        delta = {"content": text} if text else {}
        chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
