"""File-system view of the ``unshare`` mode, built by the server at start inside its own mount namespace.

Runs inside the sandbox only (stdlib only). The server is uid 0 of a fresh user namespace (``unshare
--map-root-user``, run by an unprivileged host uid), so it may change mounts in its own mount namespace and
nothing else. It:

1. makes every mount private and mounts a /proc for its own PID namespace;
2. covers every top-level directory except ``/usr /lib* /bin /sbin /etc /dev /proc`` with an empty read-only
   tmpfs (so ``/home``, ``/root``, ``/tmp``, ``/var``, ``/opt``, ``/srv``, ``/mnt``, the project, ... are gone),
   then binds back, read-only, the paths the interpreter needs (its prefix) when they were under a covered one;
3. re-mounts every other mount read-only (``MS_BIND | MS_REMOUNT`` changes only this namespace's view);
4. tries to forbid further user namespaces (best effort; the kernel may refuse inside a user namespace).

Compared with bubblewrap, ``/etc`` and the host's ``/dev`` stay visible (read-only, with host permissions for
an unprivileged uid).
"""

from __future__ import annotations

import os

import _syscalls as sc

KEEP_TOP_LEVEL = frozenset({"usr", "lib", "lib32", "lib64", "libx32", "bin", "sbin", "etc", "dev", "proc"})


def setup(cfg: dict) -> None:
    """Build the view described in the module docstring. Raises OSError if any step fails."""
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    sc.mount("proc", "/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    keep = [os.path.realpath(p) for p in cfg.get("keep_paths", ())]
    keep_fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in keep}
    hidden = []
    for entry in sorted(os.listdir("/")):
        path = "/" + entry
        if entry in KEEP_TOP_LEVEL or os.path.islink(path) or not os.path.isdir(path):
            continue
        sc.mount("tmpfs", path, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "size=64k,mode=755")
        hidden.append(path)
        for kept, fd in keep_fds.items():
            if kept.startswith(path + "/"):
                os.makedirs(kept, exist_ok=True)
                sc.mount(f"/proc/self/fd/{fd}", kept, None, sc.MS_BIND | sc.MS_REC)
                sc.remount_readonly(kept)
        sc.remount_readonly(path)
    for fd in keep_fds.values():
        os.close(fd)
    for point, flags in sc.mount_points():
        covered = any(point == h or point.startswith(h + "/") for h in hidden)
        if covered or point == "/proc" or point.startswith("/proc/") or flags & sc.MS_RDONLY:
            continue
        sc.remount_readonly(point, flags)
    try:
        with open("/proc/sys/user/max_user_namespaces", "w") as f:
            f.write("0")
    except OSError:
        pass
