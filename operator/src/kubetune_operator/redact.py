"""Credentials kept out of what the operator and the CLI print: a URL's userinfo (`user:password@`)
becomes `***@`. kubetune_trainer.redact does the same on the data plane (the two packages never
import each other); tests/unit/contracts/test_redaction.py keeps them alike."""

from __future__ import annotations

import re

REDACTED = "***"
_USERINFO = re.compile(r"(?<=://)[^/@\s\"']+@")


def redact(text: str) -> str:
    """`text` with the userinfo of every URL in it replaced by ***."""
    return _USERINFO.sub(REDACTED + "@", text) if "@" in text else text
