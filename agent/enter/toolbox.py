"""Tools mode: run programs from the agent's toolbox against a target that has none (distroless).

The command keeps every joined namespace but mnt: it gets a private mount namespace whose root is a
fresh tmpfs holding the toolbox (read-only), the container's own /proc (with runc's masked and
read-only paths as they are), a minimal /dev, a writable /tmp, and the target's root, read-only, at
/target. The agent's own root is pivoted away and detached, so the command never sees the node's
filesystem or the runtime's sockets, and /proc/self/mountinfo names no path of the node's: the
toolbox is a copy in a tmpfs of its own (made once by the fork server), not a bind mount of the
agent's directory. (The overlay of /target lists its layer directories, as the container's own
mountinfo does.)

Everything is built by the enterer, outside the pod's pid namespace, before the reaper exists: a
/proc for the pod's pid namespace would otherwise have to be mounted by a process inside it, and
so visible to the pod while it still had the node's privileges. The container's /proc is cloned
instead, from inside its mount namespace (a mount of another mount namespace cannot be cloned from
outside it), with the target's root, and carried back as detached trees. Needs the new mount API
(Linux >= 5.12). Runs only in the single-threaded enterer (agent/enter/enterer.py).

What the command can write: /tmp (the session's tmpfs, gone with it), and, as the container's user
with the container's capabilities, what the container can write through /proc/PID/root of its
processes (as an ephemeral container with --target can). /target itself is read-only.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import struct
from dataclasses import dataclass

from ..linux.syscalls import checked, libc

TARGET = "target"
PATH = "/bin:/sbin:/usr/bin:/usr/sbin"
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
ETC_LINKS = ("passwd", "group", "hosts", "resolv.conf", "hostname")
ROOT_SIZE = "64m"
PROC_SUPER_MAGIC = 0x9FA0

_SYS = {"open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "mount_setattr": 442, "pivot_root": {"x86_64": 155, "aarch64": 41}.get(platform.machine(), -1)}
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
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
_loaded: dict[str, int] = {}  # toolbox dir -> its read-only tmpfs copy (a detached mount), per process


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _syscall(name: str, *args: object) -> int:
    number = _SYS[name]
    if not isinstance(number, int) or number < 0:
        raise OSError(38, f"{name}: not supported on {platform.machine()}")
    return checked(libc.syscall(number, *args), name)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    checked(libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


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

    target: int  # the container's root, read-only
    proc: int  # the container's /proc, as it has it
    dirs: tuple[tuple[str, int], ...]  # top-level directories of the toolbox
    links: tuple[tuple[str, str], ...]  # top-level symlinks of the toolbox (lib -> usr/lib)
    devices: tuple[tuple[str, int], ...]

    def fds(self) -> list[int]:
        return [self.target, self.proc, *(fd for _, fd in self.dirs), *(fd for _, fd in self.devices)]

    def close(self) -> None:
        for fd in self.fds():
            os.close(fd)


def load(toolbox: str) -> int:
    """A read-only tmpfs holding a copy of the toolbox, as a detached mount (its fd): cloned per
    session, it shows in mountinfo as `tmpfs nsinspect-toolbox`, not as a directory of the node's.
    The fork server loads it once (a 2 MB busybox toolbox: about 5 ms)."""
    if toolbox in _loaded:
        return _loaded[toolbox]
    fd = _tmpfs({"source": "nsinspect-toolbox", "mode": "0755"}, 0)
    try:
        _copy_tree(toolbox, fd)
        attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, MS_PRIVATE, 0)
        _syscall("mount_setattr", fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr))
    except BaseException:
        os.close(fd)
        raise
    _loaded[toolbox] = fd
    return fd


def _copy_tree(src: str, dest_dirfd: int) -> None:
    for entry in os.scandir(src):
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), entry.name, dir_fd=dest_dirfd)
        elif entry.is_dir():
            os.mkdir(entry.name, 0o755, dir_fd=dest_dirfd)
            sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dest_dirfd)
            try:
                _copy_tree(entry.path, sub)
            finally:
                os.close(sub)
        elif entry.is_file():
            mode = entry.stat().st_mode & 0o7555  # read and execute bits only: a toolbox is not written
            with open(entry.path, "rb") as f, \
                    open(os.open(entry.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode,
                                 dir_fd=dest_dirfd), "wb") as out:
                while chunk := f.read(1 << 20):
                    out.write(chunk)


def forget() -> None:
    """In a child that must not keep the loaded toolboxes (the enterer, before it forks the reaper)."""
    for fd in _loaded.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _loaded.clear()


def prepare(toolbox: str, target_dirfd: int) -> Prepared:
    """Clone the toolbox, a few devices, the target's root and its /proc (seen from inside its
    mount namespace)."""
    opened: list[int] = []
    try:
        copy = load(toolbox)
        dirs, links = [], []
        for entry in sorted(os.scandir(toolbox), key=lambda e: e.name):
            if entry.is_symlink():
                links.append((entry.name, os.readlink(entry.path)))
            elif entry.is_dir():
                fd = _clone(entry.name, 0, dirfd=copy)
                opened.append(fd)
                dirs.append((entry.name, fd))
        devices = []
        for name in DEVICES:
            if os.path.exists(f"/dev/{name}"):
                fd = _clone(f"/dev/{name}", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)
                opened.append(fd)
                devices.append((name, fd))
        target, proc = _clone_target(target_dirfd)
        return Prepared(target, proc, tuple(dirs), tuple(links), tuple(devices))
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise


def _clone_target(target_dirfd: int) -> tuple[int, int]:
    """The target's root (read-only) and its /proc (as it is), cloned inside its mount namespace."""
    own = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    theirs = os.open("ns/mnt", os.O_RDONLY | os.O_CLOEXEC, dir_fd=target_dirfd)
    root = os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=target_dirfd)
    clones: list[int] = []
    try:
        checked(libc.setns(theirs, CLONE_NEWNS), "setns into the target's mount namespace")
        try:
            clones.append(_clone("", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, dirfd=root,
                                 flags=AT_EMPTY_PATH))
            clones.append(_clone("proc", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, dirfd=root,
                                 flags=AT_SYMLINK_NOFOLLOW))
        finally:
            checked(libc.setns(own, CLONE_NEWNS), "setns back into our mount namespace")
        if _fs_type(clones[1]) != PROC_SUPER_MAGIC:
            raise OSError(errno.ENOENT, "the container has no /proc mounted: tools mode needs it")
        return clones[0], clones[1]
    except BaseException:
        for fd in clones:
            os.close(fd)
        raise
    finally:
        for fd in (own, theirs, root):
            os.close(fd)


def _fs_type(fd: int) -> int:
    buf = ctypes.create_string_buffer(128)  # struct statfs: f_type is its first field
    checked(libc.fstatfs(fd, buf), "fstatfs")
    return int(struct.unpack_from("l", buf)[0])


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
    """Make the tools root and pivot into it (a mount namespace of our own: nothing propagates back)."""
    checked(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = _tmpfs({"source": "nsinspect-tools", "mode": "0755", "size": ROOT_SIZE},
                  MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
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
    _attach(prepared.proc, "proc")
    _mount("nsinspect-dev", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
    for name, fd in prepared.devices:
        os.close(os.open(f"dev/{name}", os.O_CREAT | os.O_WRONLY, 0o666))
        _attach(fd, f"dev/{name}")
    for link, dest in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                       ("stderr", "/proc/self/fd/2")):
        os.symlink(dest, f"dev/{link}")
    for name, fd in prepared.dirs:
        _attach(fd, name)
    _attach(prepared.target, TARGET)
    _syscall("pivot_root", b".", b".")
    checked(libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")
    prepared.close()
