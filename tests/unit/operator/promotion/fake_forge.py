"""A forge's REST API on 127.0.0.1 that answers a script and checks every request against it.

Each `Expect` names the request (method, path, query, headers, JSON body fields) and the answer.
Requests must arrive in script order; one that does not match, or comes when the script is done,
gets a 500 and is recorded in `problems`, which the test asserts empty.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Expect:
    method: str
    path: str
    status: int = 200
    answer: Any = None
    query: dict[str, str] = field(default_factory=dict)  # these parameters, exactly
    headers: dict[str, str] = field(default_factory=dict)  # these headers, exactly (others may come)
    body: dict[str, Any] | None = None  # these fields of the JSON body, exactly


class FakeForge:
    def __init__(self) -> None:
        self.script: list[Expect] = []
        self.seen: list[dict[str, Any]] = []
        self.problems: list[str] = []
        forge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urllib.parse.urlsplit(self.path)
                request = {
                    "method": self.command,
                    "path": parts.path,
                    "query": dict(urllib.parse.parse_qsl(parts.query)),
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": json.loads(raw) if raw else None,
                }
                forge.seen.append(request)
                status, answer = forge.answer(request)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, request: dict[str, Any]) -> tuple[int, Any]:
        if not self.script:
            self.problems.append(f"unexpected {request['method']} {request['path']} {request['query']}")
            return 500, {"message": "not in the script"}
        expected = self.script.pop(0)
        wrong = []
        if (request["method"], request["path"]) != (expected.method, expected.path):
            wrong.append(f"{request['method']} {request['path']} instead of {expected.method} {expected.path}")
        if expected.query and request["query"] != expected.query:
            wrong.append(f"query {request['query']} instead of {expected.query}")
        for name, value in expected.headers.items():
            if request["headers"].get(name.lower()) != value:
                wrong.append(f"header {name}: {request['headers'].get(name.lower())!r} instead of {value!r}")
        for name, value in (expected.body or {}).items():
            if (request["body"] or {}).get(name) != value:
                wrong.append(f"body {name}: {(request['body'] or {}).get(name)!r} instead of {value!r}")
        if wrong:
            self.problems.append("; ".join(wrong))
            return 500, {"message": "request did not match the script"}
        return expected.status, expected.answer

    def expect(self, *requests: Expect) -> None:
        self.script.extend(requests)

    def __enter__(self) -> FakeForge:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
