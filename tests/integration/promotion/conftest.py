"""Real git remotes for the promotion tests: bare repositories on disk, `git daemon` and smart HTTP
(`git http-backend` behind a Basic-auth server) on 127.0.0.1, and promotion records to commit."""

from __future__ import annotations

import base64
import copy
import json
import os
import socket
import subprocess
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from promotion_git import PASSED_RECORD, GitHttpHandler, make_bare_repo, wait_for_port


@pytest.fixture
def remote(tmp_path) -> Path:
    """A bare repository on disk with a README on main."""
    return make_bare_repo(tmp_path / "remotes" / "gitops.git", {"README.md": "GitOps for serving\n"})


@pytest.fixture
def record_factory(tmp_path):
    """Writes a record.json like the operator renders, changed by `overrides`; returns its path."""
    made = []

    def make(
        *, name: str = "support-dpo", uid: str | None = None, run: str = "support-eval", **overrides
    ) -> Path:
        record = copy.deepcopy(PASSED_RECORD)
        record["adapter"]["name"] = name
        record["adapter"]["uri"] = f"s3://artifacts/team-a/finetunejobs/{name}-{run}/final"
        record["evalRun"]["name"] = run
        record["evalRun"]["uid"] = uid or f"uid-{name}-{run}"
        for dotted, value in overrides.items():
            *parents, leaf = dotted.split("__")
            node = record
            for key in parents:
                node = node[key]
            node[leaf] = value
        path = tmp_path / "records" / f"{len(made)}-{name}-{run}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
        made.append(path)
        return path

    return make


@pytest.fixture
def termination_log(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "termination-log"
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(path))
    return path


@pytest.fixture
def git_daemon(tmp_path):
    """`git daemon` serving a directory of bare repositories anonymously (pushes allowed); yields (root, base URL)."""
    root = tmp_path / "daemon"
    root.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--enable=receive-pack",
            "--informative-errors",
            f"--base-path={root}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, process)
        yield root, f"git://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def git_http(tmp_path):
    """Smart HTTP on a free loopback port, accepting only user `kubetune` with a token; yields
    (root, base URL, token)."""
    root = tmp_path / "http"
    root.mkdir()
    token = "ghp_" + base64.b32encode(os.urandom(20)).decode().lower().rstrip("=")
    handler = type(
        "Handler",
        (GitHttpHandler,),
        {
            "root": root,
            "expected_authorization": "Basic " + base64.b64encode(f"kubetune:{token}".encode()).decode(),
        },
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}", token
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
