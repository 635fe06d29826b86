"""The one place outside the checkout that the suite may use: a per-machine cache of what it builds
(the control plane's binaries, container images). It holds nothing a test reads as input: a missing
or emptied cache is rebuilt from the repository's pins."""

from __future__ import annotations

import os
from pathlib import Path


def machine_cache(name: str, override: str) -> Path:
    """`$<override>` if set, else `$XDG_CACHE_HOME/kubetune/<name>`, else `~/.cache/kubetune/<name>`."""
    if os.environ.get(override):
        return Path(os.environ[override])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kubetune" / name
