"""Fixtures shared by every test directory: sample data, a tiny model, S3 on loopback."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

# The real control plane's fixtures, registered once here: a session fixture imported into several
# conftest files would start one cluster per directory.
pytest_plugins = ["tests.cluster.testing"]

ROOT = Path(__file__).resolve().parents[1]
# Resolved: readers report resolved paths (file:line), and the checkout may sit behind a symlink.
SAMPLE_DATA = (ROOT / "tests" / "fixtures" / "data").resolve()


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """tests/fixtures/data: tiny made-up samples of every input format users bring."""
    return SAMPLE_DATA


# The samples the shared tiny model's tokenizer is trained on. Samples added since (tool calls, KTO,
# LLaMA-Factory v1, content parts) are tokenised byte by byte like any other text; training on them
# too would give every training test another tokenizer, and so another random model.
TOKENIZER_SAMPLES = ("cvalues", "defects", "llamafactory", "sharegpt", "trl")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, sample_data) -> Path:
    """A 2-layer random-weight Qwen2 model whose tokenizer was trained on tests/fixtures/data."""
    from kubetune_trainer.models.tiny import corpus_from_files, write_tiny_model

    texts = corpus_from_files(sorted(p for d in TOKENIZER_SAMPLES for p in (sample_data / d).rglob("*.json*")))
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"), texts)


@pytest.fixture(scope="session")
def moto_server():
    """A moto S3 server on 127.0.0.1 for the whole session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server._server.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_server, monkeypatch) -> dict[str, str]:
    """AWS_* variables pointing boto3 (in this process and in subprocesses) at the moto server."""
    env = {
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    from kubetune_trainer import storage

    storage.reset_clients()
    yield env
    storage.reset_clients()


@pytest.fixture
def s3_bucket(s3_env) -> str:
    """A fresh bucket owned by this test; yields its name."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI run in a subprocess: this one, plus `extra`."""
    return {**os.environ, **extra}
