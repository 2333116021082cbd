"""Thin ctypes wrappers for the Linux calls the sandbox server needs and Python 3.9-3.11 lacks.

Loaded inside the sandbox from its source text (stdlib only). Every wrapper raises OSError with the errno and
the call's arguments on failure, so a mode that cannot work fails loudly at start-up, not silently later.
Linux only; constants are the x86-64/aarch64 values (they are identical on both).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
_MOUNT_OPTION_FLAGS = {
    "ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME,
}

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def unshare(flags: int) -> None:
    """unshare(2)."""
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    """mount(2)."""
    def enc(s: str | None) -> bytes | None:
        return None if s is None else s.encode()

    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)),
           f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r})")


MNT_DETACH = 2
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(target.encode(), flags), f"umount2({target!r}, {flags})")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    """prctl(2)."""
    return _check(_libc.prctl(option, arg2, arg3, 0, 0), f"prctl({option}, {arg2}, {arg3})")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_all_capabilities() -> None:
    """Empty the bounding (where permitted), ambient, effective, permitted and inheritable sets; set no_new_privs.

    After this the process cannot regain a capability, not even by exec'ing a set-uid or file-capability binary
    or (in a user namespace where it is uid 0) any binary at all.
    """
    for cap in range(64):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError:
            break  # EINVAL past the last capability; EPERM without CAP_SETPCAP (then no_new_privs still holds)
    try:
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass  # kernels before 4.3 have no ambient set
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset(0)")
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def mount_flags(options: str) -> int:
    """The MS_* flags that a /proc/self/mountinfo options field (``rw,nosuid,relatime``) stands for."""
    flags = 0
    for opt in options.split(","):
        flags |= _MOUNT_OPTION_FLAGS.get(opt, 0)
    return flags


def mount_points() -> list[tuple[str, int]]:
    """(mount point, MS_* flags) of every mount of this mount namespace, parents before children."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            out.append((point, mount_flags(fields[5])))
    return out


def flags_of(point: str) -> int:
    """The MS_* flags of the topmost mount at ``point``."""
    flags = 0
    for p, f in mount_points():
        if p == point:
            flags = f
    return flags


def remount_readonly(point: str, flags: int | None = None) -> None:
    """Make one existing mount read-only, keeping its locked flags (required inside a user namespace).

    ``MS_BIND`` makes this change only this mount namespace's view, never the file system itself.
    """
    flags = flags_of(point) if flags is None else flags
    mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | (flags & ~MS_RDONLY))
