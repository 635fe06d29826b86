"""Helpers for the promotion tests: real git on bare repositories, a smart-HTTP handler, a record."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

AUTHOR_ENV = {
    "GIT_AUTHOR_NAME": "someone",
    "GIT_AUTHOR_EMAIL": "someone@example.com",
    "GIT_COMMITTER_NAME": "someone",
    "GIT_COMMITTER_EMAIL": "someone@example.com",
}

PASSED_RECORD = {
    "schemaVersion": 1,
    "action": "promote",
    "adapter": {
        "name": "support-dpo",
        "uri": "s3://artifacts/team-a/finetunejobs/support-dpo/final",
        "sha256": {"adapter_model.safetensors": "a" * 64, "adapter_config.json": "b" * 64},
        "trueBase": {
            "baseModel": "s3://models/qwen2-0.5b",
            "mergedAdapters": [
                {"uri": "s3://artifacts/team-a/finetunejobs/support-sft/final", "sha256": "c" * 64}
            ],
        },
        "rank": 32,
        "fineTuneJob": {"namespace": "team-a", "name": "support-dpo"},
    },
    "evalRun": {
        "namespace": "team-a",
        "name": "support-eval",
        "uid": "0b6f6a52-0000-4000-8000-000000000001",
        "candidate": "dpo",
        "passed": True,
        "gates": [
            {
                "name": "pass-rate",
                "metric": "pass_rate",
                "candidate": "dpo",
                "value": 0.91,
                "threshold": 0.85,
                "comparator": ">=",
                "passed": True,
            }
        ],
        "metrics": {
            "dpo": {"pass_rate": {"value": 0.91, "ciLow": 0.88, "ciHigh": 0.94}},
            "base": {"pass_rate": {"value": 0.72, "ciLow": 0.68, "ciHigh": 0.76}},
        },
        "report": "s3://artifacts/team-a/evalruns/support-eval/report.html",
    },
}


def git(*args: str, cwd: Path | None = None, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **AUTHOR_ENV},
        check=False,
    )
    assert result.returncode == 0, f"git {args}: {result.stderr}"
    return result.stdout.strip()


def make_bare_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    """A bare repository whose `main` holds one commit with `files` (none: an empty repository)."""
    git("init", "--quiet", "--bare", "--initial-branch=main", str(path))
    if files:
        entries = "".join(
            f"100644 blob {git('--git-dir', str(path), 'hash-object', '-w', '--stdin', stdin=content)}\t{name}\n"
            for name, content in files.items()
        )
        tree = git("--git-dir", str(path), "mktree", stdin=entries)
        commit = git("--git-dir", str(path), "commit-tree", tree, "-m", "Start the GitOps repository")
        git("--git-dir", str(path), "update-ref", "refs/heads/main", commit)
    return path


def show(repo: Path, revision: str) -> str:
    return git("--git-dir", str(repo), "show", revision)


def branch_tip(repo: Path, branch: str = "main") -> str:
    return git("--git-dir", str(repo), "rev-parse", f"refs/heads/{branch}")


def checkout(repo: Path, into: Path, branch: str = "main") -> Path:
    git("clone", "--quiet", "--branch", branch, str(repo), str(into))
    return into


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"git daemon exited: {process.stderr.read()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"git daemon did not listen on 127.0.0.1:{port} within {timeout_s} s")


class GitHttpHandler(BaseHTTPRequestHandler):
    """Smart HTTP: `git http-backend` as CGI behind HTTP Basic auth."""

    protocol_version = "HTTP/1.0"
    root: Path
    expected_authorization: str

    def log_message(self, format, *args):  # the test output is no place for an access log
        return

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        if self.headers.get("Authorization") != self.expected_authorization:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="gitops"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "REMOTE_USER": "kubetune",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        body = self._body() if self.command == "POST" else b""
        env["CONTENT_LENGTH"] = str(len(body))
        result = subprocess.run(
            ["git", "http-backend"], input=body, capture_output=True, env=env, check=False
        )
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        headers = [line.split(":", 1) for line in head.decode().splitlines() if ":" in line]
        status = next((value.strip() for key, value in headers if key.lower() == "status"), "200 OK")
        self.send_response(int(status.split()[0]))
        for key, value in headers:
            if key.lower() != "status":
                self.send_header(key, value.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _serve
    do_POST = _serve
