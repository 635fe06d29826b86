"""Credentials kept out of every message the trainer writes: errors, the termination summary
(which becomes the resource's status), logs and tracebacks.

An endpoint such as `AWS_ENDPOINT_URL=http://user:password@minio:9000` reaches botocore's error
messages whole; so does any URL a user writes with a password in it. Whatever is between `://` and
`@` goes (kubetune_operator.redact does the same for the operator; a contract test keeps the two
alike). botocore logs request headers, the session token among them, at DEBUG: its loggers are
kept at INFO whatever the log level.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from typing import Any

REDACTED = "***"
_USERINFO = re.compile(r"(?<=://)[^/@\s\"']+@")
# Loggers that print credentials (headers, signed requests) at DEBUG.
CHATTY = ("botocore", "boto3", "s3transfer")


def redact(text: str) -> str:
    """`text` with the userinfo of every URL in it replaced by ***."""
    return _USERINFO.sub(REDACTED + "@", text) if "@" in text else text


def redact_values(value: Any) -> Any:
    """Every string in a JSON-like value, redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_values(item) for item in value]
    return value


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def install(level: int, fmt: str) -> None:
    """Logging at `level` through a redacting formatter, botocore kept quiet, tracebacks redacted."""
    logging.basicConfig(level=level, format=fmt)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter(fmt))
    for name in CHATTY:
        logging.getLogger(name).setLevel(max(level, logging.INFO))

    def excepthook(kind, value, tb) -> None:
        sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))

    sys.excepthook = excepthook
