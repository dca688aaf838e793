"""A local HTTP server that answers like a provider's documented API, with scripted faults.

Real sockets and the real HTTP client: only the provider at the other end is ours.
"""

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class FakeRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body or b"{}")


@dataclass
class Reply:
    status: int = 200
    body: object = None  # dict/list → JSON; str/bytes → sent as is
    headers: dict[str, str] = field(default_factory=dict)


class FakeProvider:
    def __init__(self):
        self.routes: dict[tuple[str, str], Callable[[FakeRequest], Reply]] = {}
        self.faults: deque[tuple[Callable[[FakeRequest], bool], Reply]] = deque()
        self.requests: list[FakeRequest] = []
        self.hold: tuple[Callable[[FakeRequest], bool], threading.Event] | None = None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address
        return f"http://{host}:{port}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.hold:
            self.hold[1].set()
        self._server.shutdown()
        self._server.server_close()

    def route(self, method: str, path: str):
        def register(handler):
            self.routes[(method.upper(), path)] = handler
            return handler

        return register

    def fail(self, reply: Reply, *, times: int = 1, when: Callable[[FakeRequest], bool] = lambda r: True):
        """The next `times` matching requests get `reply` instead of the real answer."""
        for _ in range(times):
            self.faults.append((when, reply))

    def block(self, when: Callable[[FakeRequest], bool]) -> threading.Event:
        """Hold matching requests until the returned event is set (a point to kill a sync)."""
        event = threading.Event()
        self.hold = (when, event)
        return event

    def calls(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)

    def _answer(self, request: FakeRequest) -> Reply:
        self.requests.append(request)
        if self.hold and self.hold[0](request):
            self.hold[1].wait(timeout=60)
        for index, (when, reply) in enumerate(self.faults):
            if when(request):
                del self.faults[index]
                return reply
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return Reply(404, {"message": f"no route {request.method} {request.path}"})
        return handler(request)

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = FakeRequest(
                    method=self.command,
                    path=parts.path,
                    query={k: v[-1] for k, v in parse_qs(parts.query).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                reply = fake._answer(request)
                if isinstance(reply.body, (dict, list)):
                    payload = json.dumps(reply.body).encode()
                    content_type = "application/json"
                else:
                    payload = reply.body.encode() if isinstance(reply.body, str) else (reply.body or b"")
                    content_type = "application/json"
                self.send_response(reply.status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        return Handler
