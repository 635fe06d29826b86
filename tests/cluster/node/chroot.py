"""Inside a container's private mount namespace (made by `unshare --mount`): enter an image's root
filesystem as a kubelet's runtime would, then exec the container.

    python -P chroot.py PLAN.json

PLAN: {"root": image rootfs, "binds": {path in the container: host path}, "files": {path: host
file} (bound read-only: /etc/hosts, /etc/resolv.conf), "read_only_root": bool, "uid": N,
"gid": N, "env": {...}, "argv": [...], "cwd": "..."}

The root is bound onto itself (read-only when asked, after the mount points exist), with a
fresh /proc, a /dev of the usual devices on a tmpfs and a /dev/shm; the pod's volumes are bound
at their mount paths, resolved inside the root (so /var/run/... follows the image's own
/var/run -> /run). Then the process drops every capability from its bounding set, sets
no_new_privs (allowPrivilegeEscalation: false), takes the uid and gid, and execs the argv with
exactly the env given. Standard library only: it runs before the container exists.
"""

import ctypes
import json
import os
import sys
from pathlib import Path

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC = 32, 4096, 16384
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
libc = ctypes.CDLL(None, use_errno=True)


def mount(source, target, fstype=None, flags=0, data=None):
    if libc.mount(source.encode() if source else None, str(target).encode(), fstype.encode() if fstype else None,
                  flags, data.encode() if data else None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def mount_point(path, directory):
    """Make `path` (inside the chroot) exist as a directory or a file to mount on."""
    path = Path(path)
    if directory:
        path.mkdir(parents=True, exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.touch()


def fail(message):
    # As a runtime reports a container that cannot start: on stderr, exit 128.
    print(f"node agent: {message}", file=sys.stderr)
    sys.exit(128)


def main():
    plan = json.loads(Path(sys.argv[1]).read_text())
    root = plan["root"]
    # Sources are opened before the chroot and bound through /proc/self/fd afterwards, so mount
    # paths resolve inside the image (its symlinks, not this machine's).
    sources = {path: os.open(host, os.O_PATH | os.O_CLOEXEC) for path, host in
               [*plan["binds"].items(), *plan["files"].items()]}
    devices = {f"/dev/{name}": os.open(f"/dev/{name}", os.O_PATH | os.O_CLOEXEC) for name in DEVICES}
    mount(root, root, flags=MS_BIND | MS_REC)
    os.chroot(root)
    os.chdir("/")
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=755")
    mount_point("/dev/shm", directory=True)
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for path, fd in [*devices.items(), *sources.items()]:
        mount_point(path, directory=os.path.isdir(f"/proc/self/fd/{fd}"))
        mount(f"/proc/self/fd/{fd}", path, flags=MS_BIND)
        if path in plan["files"]:
            mount(None, path, flags=MS_REMOUNT | MS_BIND | MS_RDONLY)
        os.close(fd)
    if plan["read_only_root"]:
        mount(None, "/", flags=MS_REMOUNT | MS_BIND | MS_RDONLY)
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail("cannot set no_new_privs")
    os.setgroups([])
    os.setgid(plan["gid"])
    os.setuid(plan["uid"])
    try:
        os.chdir(plan["cwd"])
    except OSError as exc:
        fail(f"working directory {plan['cwd']}: {exc.strerror}")
    try:
        os.execvpe(plan["argv"][0], plan["argv"], plan["env"])
    except OSError as exc:
        fail(f'exec: "{plan["argv"][0]}": {exc.strerror}')


if __name__ == "__main__":
    main()
