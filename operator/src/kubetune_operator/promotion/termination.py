"""The promote pod's termination summary (contracts §5), written where the kubelet reads it.

The trainer has its own writer; the operator image cannot import it, and this one is a few lines.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MAX_BYTES = 4096  # what Kubernetes keeps of a termination message


def write_termination_summary(summary: dict[str, object]) -> None:
    path = Path(os.environ.get("KUBETUNE_TERMINATION_LOG", "/dev/termination-log"))
    text = json.dumps(summary, sort_keys=True, ensure_ascii=False)
    error = summary.get("error")
    while len(text.encode()) > MAX_BYTES and isinstance(error, str) and error:
        # Cutting as many characters as there are excess bytes removes at least that many bytes.
        error = error[: max(0, len(error) - (len(text.encode()) - MAX_BYTES) - 1)]
        text = json.dumps({**summary, "error": error + "…"}, sort_keys=True, ensure_ascii=False)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        # Outside a pod (a manual run) there is usually no termination log to write.
        log.debug("no termination summary written to %s: %s", path, exc)
