"""The Linux calls the namespace helper needs and Python's os module lacks: prctl, setns, capset.

Thin ctypes wrappers that turn a failed call into OSError, and the constants they take (clone
flags, prctl options), kept in one place so the helper's process roles (agent/enter/) read as steps.
"""

from __future__ import annotations

import ctypes
import os

NS_ORDER = ("user", "cgroup", "ipc", "uts", "net", "pid", "mnt", "time")  # nsenter's
CLONE = {"mnt": 0x00020000, "cgroup": 0x02000000, "uts": 0x04000000, "ipc": 0x08000000,
         "user": 0x10000000, "pid": 0x20000000, "net": 0x40000000, "time": 0x00000080}

PR_SET_DUMPABLE, PR_SET_KEEPCAPS, PR_SET_NAME = 4, 8, 15
PR_CAPBSET_READ, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 23, 24, 36, 38, 47
PR_CAP_AMBIENT_RAISE, PR_CAP_AMBIENT_CLEAR_ALL = 2, 4
_CAP_VERSION_3 = 0x20080522

libc = ctypes.CDLL(None, use_errno=True)


def checked(result: int, what: str) -> int:
    """A libc call's result, or its errno as OSError (libc is loaded with use_errno)."""
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    return checked(libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0),
                              ctypes.c_ulong(0)), f"prctl({option})")


def set_name(name: bytes) -> None:
    """The process name (comm) ps shows for a helper process."""
    checked(libc.prctl(PR_SET_NAME, ctypes.c_char_p(name[:15]), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)), "prctl(PR_SET_NAME)")


def setns(fd: int, nstype: int) -> None:
    checked(libc.setns(fd, nstype), "setns")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    data = (_CapData * 2)(*(_CapData((effective >> s) & 0xFFFFFFFF, (permitted >> s) & 0xFFFFFFFF,
                                     (inheritable >> s) & 0xFFFFFFFF) for s in (0, 32)))
    checked(libc.capset(ctypes.byref(_CapHeader(_CAP_VERSION_3, 0)), data), "capset")
