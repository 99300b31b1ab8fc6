"""Tools mode: run programs from the agent's toolbox against a target that has none (distroless).

The command keeps every joined namespace but mnt: it gets a private mount namespace whose root is a
fresh tmpfs holding the toolbox (read-only), a /proc of the joined pid namespace (with the paths
runc masks or makes read-only treated the same way), a minimal /dev, a writable /tmp, and the
target's root, read-only, at /target. The agent's own root is pivoted away and detached, so the
command never sees the node's filesystem or the runtime's sockets.

A mount of another mount namespace cannot be bind-mounted from outside it, so the target's root is
cloned (open_tree) from inside its namespace and carried back as a detached tree. Needs the new
mount API (Linux >= 5.12). Runs only in the single-threaded helper (agent/enter.py), never in the
agent's server process.
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass

TARGET = "target"
PATH = "/bin:/sbin:/usr/bin:/usr/sbin"
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# As runc does for containers: a fresh /proc would otherwise let a root command write sysctls.
PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
PROC_MASKED = ("kcore", "keys", "timer_list", "sched_debug", "latency_stats")
ETC_LINKS = ("passwd", "group", "hosts", "resolv.conf", "hostname")
ROOT_SIZE = "64m"

_libc = ctypes.CDLL(None, use_errno=True)
_SYS = {"open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "mount_setattr": 442, "pivot_root": {"x86_64": 155, "aarch64": 41}.get(platform.machine(), -1)}
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 4
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 1 << 18
MNT_DETACH = 2
CLONE_NEWNS = 0x20000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _syscall(name: str, *args: object) -> int:
    number = _SYS[name]
    if not isinstance(number, int) or number < 0:
        raise OSError(38, f"{name}: not supported on {platform.machine()}")
    return _check(_libc.syscall(number, *args), name)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    _check(_libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


def _clone(path: str, attrs: int, dirfd: int = AT_FDCWD, flags: int = 0) -> int:
    """A detached copy of the mount tree at `path`, with `attrs` set on every mount of it."""
    fd = _syscall("open_tree", dirfd, path.encode(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | flags)
    try:
        attr = _MountAttr(attrs, 0, MS_PRIVATE, 0)
        _syscall("mount_setattr", fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr))
    except OSError:
        os.close(fd)
        raise
    return fd


def _attach(fd: int, path: str) -> None:
    _syscall("move_mount", fd, b"", AT_FDCWD, path.encode(), MOVE_MOUNT_F_EMPTY_PATH)


@dataclass(frozen=True)
class Prepared:
    """Detached mount trees made before any namespace is joined, attached later by enter_root()."""

    target: int
    dirs: tuple[tuple[str, int], ...]  # top-level directories of the toolbox
    links: tuple[tuple[str, str], ...]  # top-level symlinks of the toolbox (lib -> usr/lib)
    devices: tuple[tuple[str, int], ...]

    def fds(self) -> list[int]:
        return [self.target, *(fd for _, fd in self.dirs), *(fd for _, fd in self.devices)]

    def close(self) -> None:
        for fd in self.fds():
            os.close(fd)


def prepare(toolbox: str, target_dirfd: int) -> Prepared:
    """Clone the toolbox, a few devices and the target's root (seen from inside its mount namespace)."""
    opened: list[int] = []
    try:
        dirs, links = [], []
        for entry in sorted(os.scandir(toolbox), key=lambda e: e.name):
            if entry.is_symlink():
                links.append((entry.name, os.readlink(entry.path)))
            elif entry.is_dir():
                fd = _clone(entry.path, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
                opened.append(fd)
                dirs.append((entry.name, fd))
        devices = []
        for name in DEVICES:
            if os.path.exists(f"/dev/{name}"):
                fd = _clone(f"/dev/{name}", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)
                opened.append(fd)
                devices.append((name, fd))
        target = _clone_target_root(target_dirfd)
        return Prepared(target, tuple(dirs), tuple(links), tuple(devices))
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise


def _clone_target_root(target_dirfd: int) -> int:
    own = os.open("/proc/self/ns/mnt", os.O_RDONLY)
    theirs = os.open("ns/mnt", os.O_RDONLY, dir_fd=target_dirfd)
    root = os.open("root", os.O_PATH | os.O_DIRECTORY, dir_fd=target_dirfd)
    try:
        _check(_libc.setns(theirs, CLONE_NEWNS), "setns into the target's mount namespace")
        try:
            return _clone("", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, dirfd=root,
                          flags=AT_EMPTY_PATH)
        finally:
            _check(_libc.setns(own, CLONE_NEWNS), "setns back into our mount namespace")
    finally:
        for fd in (own, theirs, root):
            os.close(fd)


def _tmpfs(options: dict[str, str], attrs: int) -> int:
    fs = _syscall("fsopen", b"tmpfs", 1)  # FSOPEN_CLOEXEC
    try:
        for key, value in options.items():
            _syscall("fsconfig", fs, FSCONFIG_SET_STRING, key.encode(), value.encode(), 0)
        _syscall("fsconfig", fs, FSCONFIG_CMD_CREATE, None, None, 0)
        return _syscall("fsmount", fs, 1, attrs)  # FSMOUNT_CLOEXEC
    finally:
        os.close(fs)


def enter_root(prepared: Prepared) -> None:
    """Make the tools root and pivot into it. Call in a process already inside the target's pid
    namespace (the /proc mounted here shows the namespace of the caller)."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we do propagates back to the node
    root = _tmpfs({"mode": "0755", "size": ROOT_SIZE}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
    try:
        os.fchdir(root)
        for name in ("proc", "dev", TARGET, "tmp", *(n for n, _ in prepared.dirs)):
            os.mkdir(name, 0o755)
        os.chmod("tmp", 0o1777)
        for name, dest in prepared.links:
            os.symlink(dest, name)
        if "etc" not in {n for n, _ in prepared.dirs} | {n for n, _ in prepared.links}:
            os.mkdir("etc", 0o755)  # the target's own, so `id` and DNS behave as in the target
            for name in ETC_LINKS:
                os.symlink(f"/{TARGET}/etc/{name}", f"etc/{name}")
        _attach(root, "/")
    finally:
        os.close(root)
    _mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in PROC_READONLY:
        if os.path.exists(f"proc/{name}"):
            _mount(f"proc/{name}", f"proc/{name}", None, MS_BIND | MS_REC)
            _mount(None, f"proc/{name}", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
    for name, fd in prepared.devices:
        os.close(os.open(f"dev/{name}", os.O_CREAT | os.O_WRONLY, 0o666))
        _attach(fd, f"dev/{name}")
    for name in PROC_MASKED:
        if os.path.isfile(f"proc/{name}") and os.path.exists("dev/null"):
            _mount("dev/null", f"proc/{name}", None, MS_BIND)
    for link, dest in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                       ("stderr", "/proc/self/fd/2")):
        os.symlink(dest, f"dev/{link}")
    for name, fd in prepared.dirs:
        _attach(fd, name)
    _attach(prepared.target, TARGET)
    _syscall("pivot_root", b".", b".")
    _check(_libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")
    prepared.close()
