"""Both sides keep a URL's userinfo out of what they print, alike; the trainer's errors, summaries,
logs and tracebacks hold no endpoint password and botocore prints no credentials at DEBUG."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune_operator.redact import redact as operator_redact
from kubetune_trainer.redact import redact as trainer_redact

CASES = {
    'Could not connect to the endpoint URL: "http://user:s3cret@minio:9000/bucket"':
        'Could not connect to the endpoint URL: "http://***@minio:9000/bucket"',
    "https://x-access-token:ghp_abc@github.com/o/r.git and s3://key:secret@bucket/x":
        "https://***@github.com/o/r.git and s3://***@bucket/x",
    "http://token@host/ 'http://a:b@c'": "http://***@host/ 'http://***@c'",
    "git@github.com:o/r.git user@example.com file:///x@y s3://bucket/a@b": "git@github.com:o/r.git user@example.com file:///x@y s3://bucket/a@b",
    "no url here": "no url here",
}


@pytest.mark.parametrize("text, expected", CASES.items())
def test_both_sides_redact_userinfo_alike(text, expected):
    assert operator_redact(text) == trainer_redact(text) == expected


def test_an_endpoint_password_reaches_no_message_log_or_summary(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
        "AWS_ENDPOINT_URL": "http://user:s3cretPW@127.0.0.1:9", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY",
        "AWS_SECRET_ACCESS_KEY": "secretKeyEXAMPLE", "AWS_SESSION_TOKEN": "SESSIONtokenEXAMPLE",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard",
        "KUBETUNE_TERMINATION_LOG": str(tmp_path / "termination-log"),
    }
    trainer = Path(sys.executable).with_name("kubetune-trainer")
    result = subprocess.run(
        [str(trainer), "--log-level", "DEBUG", "data", "prepare", "--source", "s3://bucket/x.jsonl", "--kind", "sft",
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 71, result.stderr[-2000:]
    summary = (tmp_path / "termination-log").read_text()
    assert "http://***@127.0.0.1:9" in summary
    for secret in ("s3cretPW", "secretKeyEXAMPLE", "SESSIONtokenEXAMPLE"):
        assert secret not in result.stdout + result.stderr + summary, secret


def test_the_redacting_formatter_covers_arguments_and_tracebacks(caplog):
    from kubetune_trainer.redact import RedactingFormatter

    try:
        raise ValueError("cannot reach http://u:pw@h/x")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "endpoint %s", ("http://u:pw@h",), sys.exc_info())
    text = RedactingFormatter("%(message)s").format(record)
    assert "pw" not in text and "endpoint http://***@h" in text and "cannot reach http://***@h/x" in text
