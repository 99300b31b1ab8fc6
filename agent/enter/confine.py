"""The container's confinement, for a command run "as the container": what CRI exec (runc exec) gives.

runc exec puts the command in the container's cgroup on every hierarchy, under its seccomp filter,
with its LSM label, oom_score_adj, rlimits, capabilities, no_new_privs and ids. nsenter gives none
of the first five, and a command without them escapes the pod's memory and pids limits and can make
every syscall the runtime's filter blocks (`unshare -U -r`, keyctl, bpf, ...). So the enterer copies
them from the target process itself, which makes this work the same on every runtime and without one
(the /proc fallback):

  cgroups       /proc/PID/cgroup, each hierarchy found in the node's mounts; the enterer writes itself
                into each cgroup.procs before it joins the cgroup namespace (v2 refuses moves across
                the root of the writer's cgroup namespace).
  oom, rlimits  /proc/PID/oom_score_adj and prlimit(PID).
  LSM label     /proc/PID/attr/apparmor/current (or attr/current), written to our attr/exec: it takes
                effect at the command's execve, as runc's does.
  seccomp       the runtime's filter is the first of the target's chain (what runc loaded before it
                exec'd the container's init; filters the container's processes add come after it),
                read with PTRACE_SECCOMP_GET_FILTER: the enterer seizes the target for about 0.15 ms
                (a target that does not stop within a second refuses the session, and the enterer
                exits, which detaches it: it is never left stopped). Loaded as runc loads it: before the
                credentials are dropped without no_new_privs (loading needs CAP_SYS_ADMIN then), after
                them with it.

Measured on this 2-core VM (containerd 1.6, cgroup v1 hybrid, 13 hierarchies): moving into the
container's cgroups 0.3-1 ms (one RCU grace period is shared by the back-to-back writes), reading
the filter 0.6 ms (the fork included), the rest under 0.1 ms.

What cannot be reproduced is listed in `missing`; the enterer refuses the session then, unless the
caller may have nsenter semantics (`create pods/nsenter`), see enterer.py. Runs only in the
single-threaded enterer, never in the agent's server process.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import resource
import signal
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..linux.syscalls import checked, libc

PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207
PTRACE_SECCOMP_GET_FILTER, PTRACE_SECCOMP_GET_METADATA = 0x420C, 0x420D
PTRACE_EVENT_STOP = 128
WALL = 0x40000000
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_LOG, SECCOMP_FILTER_FLAG_SPEC_ALLOW = 2, 4
_SECCOMP_NR = {"x86_64": 317, "aarch64": 277}.get(platform.machine(), -1)
SOCK_FILTER_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k
READ_FILTER_WITHIN = 1.0
_mounts: dict[frozenset[str], tuple[str, str]] = {}


class Readable(Protocol):
    """The target as the enterer holds it (join.HeldProcess): its pid and its /proc directory."""

    pid: int

    def read(self, name: str) -> bytes: ...


@dataclass(frozen=True)
class Confinement:
    """What the command must get, read from the target before anything is joined."""

    cgroups: tuple[str, ...] = ()  # cgroup.procs files, on this node's cgroup mounts
    oom_score_adj: int | None = None
    rlimits: tuple[tuple[int, int, int], ...] = ()  # (resource, soft, hard)
    label: tuple[str, bytes] | None = None  # (our attr file to write, what to write), when the target has one
    seccomp: bytes = b""  # the filter's sock_filter array; b"" when the target has none
    seccomp_flags: int = 0
    missing: tuple[str, ...] = field(default_factory=tuple)  # what cannot be reproduced here, and why

    def applied(self, missing: list[str]) -> list[str]:
        """The parts the command gets, for the audit line: what the container has, less what is missing."""
        have = (("cgroups", bool(self.cgroups)), ("oom_score_adj", self.oom_score_adj is not None),
                ("rlimits", bool(self.rlimits)), ("lsm", self.label is not None), ("seccomp", bool(self.seccomp)))
        return [name for name, has in have if has and name not in skipped(missing)]


PARTS = ("cgroups", "oom_score_adj", "rlimits", "lsm", "seccomp")


def skipped(missing: list[str]) -> set[str]:
    """The parts that could not be reproduced, from the messages saying why (each starts with its part)."""
    return {part for part in PARTS if any(m.startswith(part.rstrip("s")) for m in missing)}


# -- reading ------------------------------------------------------------------------------------------
def read(target: Readable) -> Confinement:
    missing: list[str] = []
    status = dict(line.split(":", 1) for line in target.read("status").decode().splitlines() if ":" in line)
    cgroups = _cgroups(target.read("cgroup").decode(), cgroup_mounts(), missing)
    oom = int(target.read("oom_score_adj"))
    rlimits = _rlimits(target.read("limits").decode(), missing)
    label = _label(target, missing)
    flt, flags = b"", 0
    mode = status.get("Seccomp", "0").strip()
    if mode == "2":
        try:
            flt, flags = read_filter(target.pid)
        except TracerStuck:
            raise
        except OSError as err:
            missing.append(f"seccomp: cannot read the container's filter ({err.strerror or err})")
    elif mode == "1":
        missing.append("seccomp: the container runs in strict mode")
    return Confinement(tuple(cgroups), oom, tuple(rlimits), label, flt, flags, tuple(missing))


def _rlimits(text: str, missing: list[str]) -> list[tuple[int, int, int]]:
    """/proc/PID/limits, one row per resource in the kernel's order (readable by anyone, where
    prlimit(PID) needs CAP_SYS_RESOURCE for another's ids)."""
    found = []
    for res, line in enumerate(text.splitlines()[1:]):
        cells = line[25:].split()  # the name column is 25 characters wide (fs/proc/base.c)
        try:
            soft, hard = (resource.RLIM_INFINITY if v == "unlimited" else int(v) for v in cells[:2])
        except ValueError:
            missing.append(f"rlimits: cannot read the container's ({line.strip()!r})")
            return []
        found.append((res, soft, hard))
    return found


def cgroup_mounts() -> dict[frozenset[str], tuple[str, str]]:
    """Each cgroup hierarchy mounted here: its controllers (and name=) -> (mount root, mount point);
    the unified hierarchy has the empty set. Read once per process (the fork server's warm-up):
    should a hierarchy be mounted later, the agent's check of the result refuses the session."""
    if _mounts:
        return _mounts
    found = _mounts
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
                continue
            root, point = _unescape(fields[3]), _unescape(fields[4])
            if tail[0] == "cgroup2":
                key: frozenset[str] = frozenset()
            else:
                key = frozenset(o for o in tail[2].split(",") if (o not in ("rw", "ro") and "=" not in o)
                                or o.startswith("name="))
            found.setdefault(key, (root, point))  # the first mount of a hierarchy
    return found


def _unescape(path: str) -> str:
    return path.encode().decode("unicode_escape") if "\\" in path else path


def _cgroups(text: str, mounts: dict[frozenset[str], tuple[str, str]], missing: list[str]) -> list[str]:
    paths = []
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        wanted = frozenset(controllers.split(",")) if controllers else frozenset()
        mount = mounts.get(wanted) or next((m for k, m in mounts.items() if wanted and wanted <= k), None)
        if mount is None:
            continue  # a hierarchy not mounted here: nothing can be joined, nor escaped, through it
        root, point = mount
        rel = os.path.relpath(path, root) if root != "/" else path.lstrip("/")
        if path.startswith("/..") or rel.startswith(".."):
            missing.append(f"cgroup {controllers or 'unified'}: {path} is outside the agent's cgroup namespace")
            continue
        paths.append(os.path.join(point, rel, "cgroup.procs").replace("/./", "/"))
    return paths


def _label(target: Readable, missing: list[str]) -> tuple[str, bytes] | None:
    """The LSM label to take at exec: AppArmor's profile ("exec NAME"), or another LSM's context."""
    for theirs, ours, apparmor in (("attr/apparmor/current", "/proc/thread-self/attr/apparmor/exec", True),
                                   ("attr/current", "/proc/thread-self/attr/exec", False)):
        try:
            current = target.read(theirs).rstrip(b"\0\n")
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                continue  # no such LSM here
            missing.append(f"lsm: cannot read the container's label ({err.strerror})")
            return None
        if apparmor:
            profile = current.rsplit(b" (", 1)[0]  # "name (enforce)"
            return None if profile in (b"", b"unconfined") else (ours, b"exec " + profile)
        return (ours, current) if current else None
    return None


# -- the seccomp filter --------------------------------------------------------------------------------
class TracerStuck(OSError):
    """The target did not stop to be read: this process is still its tracer, and must exit (a tracer
    that exits detaches its tracee) rather than go on."""


def read_filter(pid: int) -> tuple[bytes, int]:
    """The first filter of `pid`'s chain and its flags: seized, interrupted, read, detached (about
    0.15 ms; a child doing it would cost 5 ms of fork)."""
    _ptrace(PTRACE_SEIZE, pid)
    _ptrace(PTRACE_INTERRUPT, pid)
    deliver, deadline = 0, time.monotonic() + READ_FILTER_WITHIN
    while True:
        got, status = os.waitpid(pid, WALL | os.WNOHANG)
        if not got:
            if time.monotonic() > deadline:  # in D state, say: it stops when it returns to user space
                raise TracerStuck(errno.ETIMEDOUT, "the container's process did not stop to have its filter read")
            time.sleep(0.0001)
            continue
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            raise OSError(errno.ESRCH, "the container's process exited")
        if os.WIFSTOPPED(status):
            if not (os.WSTOPSIG(status) == signal.SIGTRAP and status >> 16 == PTRACE_EVENT_STOP):
                deliver = os.WSTOPSIG(status)  # a signal arrived first: it is passed on when we detach
            break
    try:
        index = 0  # the oldest (kernel/seccomp.c get_nth_filter): the runtime's, before what the container added
        count = _ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index)
        program = ctypes.create_string_buffer(count * SOCK_FILTER_SIZE)
        _ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, program)
        meta = ctypes.create_string_buffer(struct.pack("=QQ", index, 0), 16)
        flags = 0
        with contextlib.suppress(OSError):  # older kernels: no flags to keep
            _ptrace(PTRACE_SECCOMP_GET_METADATA, pid, 16, meta)
            flags = struct.unpack("=QQ", meta.raw)[1]
    finally:
        _ptrace(PTRACE_DETACH, pid, 0, deliver)
    return program.raw, flags


def _ptrace(request: int, pid: int, addr: int = 0, data: int | ctypes.Array[ctypes.c_char] | None = 0) -> int:
    return checked(libc.ptrace(ctypes.c_long(request), ctypes.c_long(pid), ctypes.c_void_p(addr),
                               data if isinstance(data, ctypes.Array) else ctypes.c_void_p(data)), "ptrace")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def load_filter(program: bytes, flags: int) -> None:
    """Load a filter on this thread (and what it forks and execs)."""
    if _SECCOMP_NR < 0:
        raise OSError(errno.ENOSYS, f"seccomp: not supported on {platform.machine()}")
    prog = _SockFprog(len(program) // SOCK_FILTER_SIZE, program)
    keep = flags & (SECCOMP_FILTER_FLAG_LOG | SECCOMP_FILTER_FLAG_SPEC_ALLOW)
    checked(libc.syscall(_SECCOMP_NR, SECCOMP_SET_MODE_FILTER, keep, ctypes.byref(prog)), "seccomp")


# -- applying ------------------------------------------------------------------------------------------
def join_cgroups(paths: Sequence[str]) -> list[str]:
    """Move this process into each cgroup; what failed, with why."""
    failed = []
    for path in paths:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError as err:
            failed.append(f"cgroup {os.path.dirname(path)}: {err.strerror}")
    return failed


def apply_process(c: Confinement) -> list[str]:
    """Everything but seccomp and the ids, through the node's /proc: before joining the mount
    namespace, where /proc/self would no longer be ours. What failed, with why."""
    failed = join_cgroups(c.cgroups)
    if c.oom_score_adj is not None:
        try:
            with open("/proc/self/oom_score_adj", "wb", buffering=0) as f:
                f.write(str(c.oom_score_adj).encode())
        except OSError as err:
            failed.append(f"oom_score_adj: {err.strerror}")
    if c.label is not None:
        try:
            with open(c.label[0], "wb", buffering=0) as f:
                f.write(c.label[1])
        except OSError as err:
            failed.append(f"lsm: cannot take the container's label: {err.strerror}")
    return failed


def apply_rlimits(c: Confinement) -> list[str]:
    """The container's limits: last before the ids, while we may still raise a hard limit (with
    CAP_SYS_RESOURCE). What failed, with why."""
    failed = []
    for res, soft, hard in c.rlimits:
        try:
            resource.setrlimit(res, (soft, hard))
        except (OSError, ValueError) as err:
            failed.append(f"rlimits: resource {res} {soft}/{hard}: {err}")
    return failed
