"""A fake labvmd: http.server on a Unix socket, answering from a route table."""

from __future__ import annotations

import json
import os
import re
import shutil
import socketserver
import tempfile
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

# A handler gets the request and returns (status, body). A body that is a
# list is sent as NDJSON, one line per element, flushed one by one.
Handler = Callable[["Request"], tuple[int, Any]]


class Request:
    """What a handler sees of a request."""

    def __init__(self, method: str, path: str, body: bytes) -> None:
        self.method = method
        self.path = path
        self.body = body
        # The named groups of the pattern route that matched, if one did.
        self.params: dict[str, str] = {}

    def json(self) -> Any:
        return json.loads(self.body)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class FakeDaemon:
    """Serves ``routes[(method, path)]`` on ``self.socket``; records requests.

    A request no exact route answers goes to the first of ``patterns``
    (method, compiled regex, handler) whose regex matches the whole path;
    its named groups are in ``Request.params``.
    """

    def __init__(self) -> None:
        # Short, so the path fits in sockaddr_un whatever the test's name.
        self.dir = tempfile.mkdtemp(prefix="lvpy-", dir="/tmp")
        self.socket = os.path.join(self.dir, "s")
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[Request] = []
        self.patterns: list[tuple[str, re.Pattern[str], Handler]] = []
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # client_address is '' on AF_UNIX
                pass

            def _serve(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                req = Request(self.command, self.path, self.rfile.read(n) if n else b"")
                fake.requests.append(req)
                h = fake.routes.get((self.command, self.path))
                if h is None:
                    for method, rx, ph in fake.patterns:
                        m = rx.fullmatch(self.path) if method == self.command else None
                        if m:
                            req.params = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()}
                            h = ph
                            break
                if h is None:
                    status, body = 404, {"error": {"code": "NotFound", "message": f"no route {self.path}"}}
                else:
                    status, body = h(req)
                if isinstance(body, list):
                    self.send_response(status)
                    self.send_header("Content-Type", "application/x-ndjson")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for item in body:
                        self.wfile.write(json.dumps(item).encode() + b"\n")
                        self.wfile.flush()
                    self.close_connection = True
                    return
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

        self._server = _Server(self.socket, H)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def route(self, method: str, path: str, status: int, body: Any) -> None:
        """Answer method path with a fixed status and body."""
        self.routes[(method, path)] = lambda _req: (status, body)

    def pattern(self, method: str, regex: str, handler: Handler) -> None:
        """Answer method and a path matching regex with handler."""
        self.patterns.append((method, re.compile(regex), handler))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)
