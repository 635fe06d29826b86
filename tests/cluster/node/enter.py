"""Inside a container's private mount namespace (made by `unshare --mount`): give it its own
/run (where the ServiceAccount token is mounted) and /etc/hosts, then exec the container.

    python -P enter.py PLAN.json     PLAN: {"binds": {path: host path}, "hosts": {name: address},
                                            "argv": [...], "cwd": "..."}

Standard library only: it runs before the container, with the container's environment.
"""

import ctypes
import json
import os
import sys
from pathlib import Path

MS_BIND = 4096
libc = ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: str, fstype: str | None = None, flags: int = 0) -> None:
    if libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    mount("tmpfs", "/run", "tmpfs")
    for path, host in plan["binds"].items():
        target = Path(path.replace("/var/run/", "/run/", 1))
        if Path(host).is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        mount(host, str(target), flags=MS_BIND)
    if plan["hosts"]:
        hosts = Path(sys.argv[1]).with_suffix(".hosts")
        lines = [Path("/etc/hosts").read_text()] + [f"{address}\t{name}" for name, address in plan["hosts"].items()]
        hosts.write_text("\n".join(lines) + "\n")
        mount(str(hosts), "/etc/hosts", flags=MS_BIND)
    os.chdir(plan["cwd"])
    os.execvp(plan["argv"][0], plan["argv"])


if __name__ == "__main__":
    main()
