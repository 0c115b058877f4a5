"""A real HTTP/1.1 server (stdlib) that answers JSON-RPC with canned results.

Only for the wire-format tests: request shape, headers, error mapping, keep-alive, streaming
fallback. Everything that needs sandboxes runs against a real msb server (test_server.py).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional

Answer = Dict[str, Any]
"""What a handler returns: {"result": ...} or {"error": {...}}, optionally "status" (HTTP),
"raw" (bytes body, not JSON-RPC), "sse" (list of (event, data) pairs), "delay" (seconds),
"close" (drop the connection after answering)."""


class Recorded:
    def __init__(self, path: str, headers: Dict[str, str], body: Any, client_port: int) -> None:
        self.path = path
        self.headers = headers
        self.body = body
        self.client_port = client_port

    @property
    def method(self) -> str:
        return str(self.body.get("method"))

    @property
    def params(self) -> Dict[str, Any]:
        return dict(self.body.get("params") or {})


class FakeRpcServer:
    """Start with ``with FakeRpcServer(handler) as srv:``; ``srv.url``, ``srv.requests``."""

    def __init__(self, handler: Callable[[Recorded], Answer]) -> None:
        self.handler = handler
        self.requests: List[Recorded] = []
        self.connections = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as separate writes: without this, Nagle + delayed ACK
            # add ~40 ms to every keep-alive answer (real servers, Node's included, set it).
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                outer.connections += 1

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"_raw": raw.decode("latin-1")}
                rec = Recorded(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    self.client_address[1],
                )
                outer.requests.append(rec)
                answer = outer.handler(rec)
                if answer.get("delay"):
                    time.sleep(float(answer["delay"]))
                if "sse" in answer:
                    self._sse(answer["sse"])
                else:
                    self._plain(answer, body)
                if answer.get("close"):
                    self.close_connection = True

            def _plain(self, answer: Answer, body: Any) -> None:
                if "raw" in answer:
                    payload = answer["raw"]
                    ctype = "text/plain"
                else:
                    msg: Dict[str, Any] = {"jsonrpc": "2.0", "id": body.get("id")}
                    if "error" in answer:
                        msg["error"] = answer["error"]
                    else:
                        msg["result"] = answer.get("result")
                    payload = json.dumps(msg).encode()
                    ctype = "application/json; charset=utf-8"
                self.send_response(int(answer.get("status", 200)))
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _sse(self, events: List[Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for event, data in events:
                    text = f"event: {event}\ndata: {json.dumps(data)}\n\n" if event else f"{data}\n\n"
                    chunk = text.encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up mid-answer (cancellation tests) is expected

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "FakeRpcServer":
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def methods(self) -> List[str]:
        return [r.method for r in self.requests]


def ok_lifecycle(extra: Optional[Callable[[Recorded], Optional[Answer]]] = None) -> Callable[[Recorded], Answer]:
    """A handler that starts and stops any sandbox and defers everything else to ``extra``."""

    def handler(rec: Recorded) -> Answer:
        if extra is not None:
            answer = extra(rec)
            if answer is not None:
                return answer
        name = rec.params.get("sandbox")
        if rec.method == "sandbox.start":
            return {"result": f"Sandbox {name} started successfully"}
        if rec.method == "sandbox.stop":
            return {"result": f"Sandbox {name} stopped successfully"}
        return {
            "status": 404,
            "error": {"code": -32601, "message": "no such method", "data": {"code": "METHOD_NOT_FOUND"}},
        }

    return handler
