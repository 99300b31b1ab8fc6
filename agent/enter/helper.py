"""The namespace-entering helper: joins a target's namespaces and runs a command in them.

setns into a mount or user namespace needs a single-threaded process, so this never runs inside
the gRPC server. The agent starts `python -m nsinspect.agent.enter.helper serve FD` once: a fork
server, single-threaded, with nothing of the agent in it, which moves itself into the agent's
cgroup for helpers (a move costs an RCU grace period, 5-20 ms: once, not per session) and forks
one enterer per request, handing it the session's fds received over a SOCK_SEQPACKET socket.
(`once FD` does the same from an interpreter spawned per session: simpler, and slower;
testbed/bench/exec.py measures both.)

The rule every stage keeps: a process the pod can see (one in its pid namespace) holds no fd, root,
cwd or privilege of the node's, and is non-dumpable, from its first instruction. A pod process with
the same ids (or CAP_SYS_PTRACE) reaches everything such a process holds through /proc/PID/fd, root
and cwd, and `openat(fd, "../..")` from a host directory fd is the node's /. So all work that needs
the node happens in the enterer, which stays outside the pod's pid namespace, and the reaper is
forked only once the enterer is as confined as the container:

  stage        pid ns   fds it holds                                  credentials
  fork server  node's   0,1 /dev/null, 2 agent's stderr, its socket   node root, all caps; non-dumpable
                        to the agent, a wake pipe, a socket per spare, (set at start, inherited by all)
                        the toolbox copy (a detached tmpfs). Exec'd from a sealed memfd copy of the
                        interpreter (so no /proc/PID/exe of any stage is the node's python3), with a
                        minimal environment; its import system sealed after warm-up (_seal); it never
                        sees a plan: each comes to its enterer on the session's own socket
  enterer      node's   the session's stdio as 0-2 (the fork server's  node root until _become_target,
                        0-2 replaced at once), status socket; while    then the container's (below);
                        preparing: target pidfd + /proc/PID dirfd,     non-dumpable again after the
                        root and cwd O_PATH fds, cgroup.procs, the     change of ids; in the container's
                        tools root's mount fds: all closed before it    cgroups from the start
                        forks the reaper
  reaper       pod's    0-2 (until the command is spawned; then the   the container's ids, caps, bounding
                        container's /dev/null), 3 its plan (until      set, no_new_privs, seccomp filter,
                        read), 4 the status socket, a signalfd; root   cgroups, oom_score_adj, rlimits and
                        and cwd the container's (or the tools root,    LSM label (taken at its exec);
                        built from pod-side mounts). A static program  non-dumpable from its first line.
                        (agent/enter/reaper.c) exec'd from a sealed memfd: no Python, no file of the node's
                        mapped (map_files), exe unwritable, environment empty, this session's plan only
  command      pod's    0-2 only (everything else is close-on-exec)    exactly the container's (runc exec's)

confine.py says where each part of the confinement comes from; --privileged skips it (and the ids),
the one unconfined mode. Per session:

  enterer   verifies the target (pidfd + start time), reads its credentials, environment and
  │         confinement, moves into its cgroups, opens everything before joining, joins with one
  │         setns(pidfd, mask) (or, on kernels before 5.8, setns on each ns fd in nsenter's order,
  │         two passes), chroots like nsenter (tools mode: pivots into the tools root), loads the
  │         seccomp filter and takes the container's ids, closes every fd of the node's.
  └ reaper  forked last, so it is inside the pid namespace, and exec'd at once (agent/enter/reaper.c); a
    │       child subreaper, so what daemonizes comes back to it and is reaped, never left as a
    │       zombie in the pod. It waits for the agent's go (the agent checks its confinement from
    │       the node's side first), starts the command, forwards signals, reports, and when the
    │       command ends (or the agent hangs up) kills what is left of the session.
    └ command  forked and exec'd by the reaper: a new session (for a terminal, its controlling tty).

The syscalls are in syscalls.py, the command's credentials and environment in creds.py, the
container's confinement in confine.py, and finding the program and loading the reaper in spawn.py.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import importlib.machinery
import json
import linecache
import os
import select
import signal
import socket
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..linux.helperwire import recv_msg, recv_raw, send_msg
from ..linux.syscalls import (
    CLONE,
    NS_ORDER,
    PR_CAPBSET_READ,
    PR_SET_DUMPABLE,
    prctl,
    set_name,
    setns,
)
from . import confine, toolbox
from .creds import Creds, read_environ
from .spawn import REAPER_ENV, _find, prepare_spawn, sealed_copy

PLAN_MAX = 192 << 10  # a SEQPACKET message must fit the socket's send buffer (net.core.wmem_default, 208 KiB)
SPARES, REFILL_DELAY = 2, 0.008
CGROUP_ENV = "NSINSPECT_EXEC_CGROUP"
TOOLBOX_ENV = "NSINSPECT_TOOLBOX"
_reaper: list[int] = []  # the reaper binary's sealed memfd (spawn.sealed_copy), loaded by main()
EXE_ENV = "NSINSPECT_EXE_FD"  # the sealed interpreter we were exec'd from: closed at once


class EnterError(Exception):
    """A failure to report to the agent: `code` names the gRPC status it becomes."""

    def __init__(self, code: str, message: str, gone: bool = False, unconfined: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.gone = gone
        self.unconfined = unconfined  # the container's confinement cannot be reproduced here


# -- what the agent asks for -------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """One session's request, as JSON on the wire to the helper."""

    pid: int
    start_time: int
    argv: tuple[str, ...]
    namespaces: tuple[str, ...] = ()  # empty: all the target has (nsenter -a)
    tty: bool = False
    tools: bool = False
    toolbox: str = ""
    user: int | None = None
    group: int | None = None
    privileged: bool = False
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    root: str = ""
    join: str = "auto"  # "pidfd", "fds" (the pre-5.8 way) or "auto"
    # "strict": the container's confinement (cgroups, seccomp, LSM label, oom_score_adj, rlimits) or
    # no session; "best": what can be reproduced (the caller may have nsenter semantics); "none": nsenter's
    confine: str = "strict"
    # the container's environment from its OCI spec, as CRI exec takes it; None: unknown here (no
    # runtime records), then the target's own (/proc/PID/environ), which the container may have changed
    base_env: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Plan:
        base = raw.get("base_env")
        return cls(**{**raw, "argv": tuple(raw["argv"]), "namespaces": tuple(raw["namespaces"]),
                      "env": tuple((k, v) for k, v in raw["env"]), "base_env": None if base is None else tuple(base)})


FD_NAMES = ("stdin", "stdout", "stderr", "status")


# -- the target --------------------------------------------------------------------------------------
@dataclass
class Target:
    """A process held by pidfd and /proc dir fd, verified to be the one the agent resolved."""

    pid: int
    pidfd: int
    dirfd: int

    @classmethod
    def open(cls, pid: int, start_time: int) -> Target:
        gone = EnterError("NOT_FOUND", f"process {pid} of the container exited", gone=True)
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise gone from None
        try:
            dirfd = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            os.close(pidfd)
            raise gone from None
        target = cls(pid, pidfd, dirfd)
        try:
            raw = target.read("stat")
            fields = raw[raw.rindex(b")") + 2:].split()
            if fields[0] in (b"Z", b"X") or (start_time and int(fields[19]) != start_time):
                raise EnterError("NOT_FOUND", f"PID {pid} no longer belongs to the container's process", gone=True)
            signal.pidfd_send_signal(pidfd, 0)  # alive now, so what we opened is that process's
        except (ProcessLookupError, FileNotFoundError):
            target.close()
            raise gone from None
        except BaseException:
            target.close()
            raise
        return target

    def read(self, name: str) -> bytes:
        fd = os.open(name, os.O_RDONLY, dir_fd=self.dirfd)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def same_ns(self, ns: str) -> bool:
        mine, theirs = os.stat(f"/proc/self/ns/{ns}"), os.stat(f"ns/{ns}", dir_fd=self.dirfd)
        return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)

    def has_ns(self, ns: str) -> bool:
        try:
            os.stat(f"ns/{ns}", dir_fd=self.dirfd)
        except FileNotFoundError:
            return False
        return True

    def close(self) -> None:
        for fd in (self.dirfd, self.pidfd):
            with contextlib.suppress(OSError):
                os.close(fd)


def choose_namespaces(plan: Plan, target: Target) -> list[str]:
    """Requested types (or all the target has), in nsenter's order; user only when it differs."""
    wanted = plan.namespaces or tuple(t for t in NS_ORDER if target.has_ns(t))
    missing = [t for t in wanted if not target.has_ns(t)]
    if missing:
        raise EnterError("INVALID_ARGUMENT", f"this kernel has no {missing[0]} namespaces")
    chosen = [t for t in NS_ORDER if t in wanted]
    if "user" in chosen and target.same_ns("user"):
        chosen.remove("user")  # setns refuses to re-enter one's own user namespace (nsenter -a skips it)
    if plan.tools and "mnt" in chosen:
        chosen.remove("mnt")
    return chosen




def join(target: Target, types: Sequence[str], method: str) -> None:
    """Join `types` of the target: one setns(pidfd, mask) (Linux >= 5.8); else nsenter's two passes
    over ns fds that were all opened before the first join."""
    if not types:
        return
    if method in ("auto", "pidfd"):
        mask = 0
        for t in types:
            mask |= CLONE[t]
        try:
            setns(target.pidfd, mask)
            return
        except OSError as err:
            if method == "pidfd" or err.errno != errno.EINVAL:
                raise _setns_error(err, ",".join(types)) from None
    fds = {}
    try:
        for t in types:
            fds[t] = os.open(f"ns/{t}", os.O_RDONLY, dir_fd=target.dirfd)
        signal.pidfd_send_signal(target.pidfd, 0)
        done = set()
        for t in types:  # first pass: everything but user, errors ignored (privileges may come with user)
            if t != "user":
                with contextlib.suppress(OSError):
                    setns(fds[t], CLONE[t])
                    done.add(t)
        for t in types:
            if t not in done:
                try:
                    setns(fds[t], CLONE[t])
                except OSError as err:
                    raise _setns_error(err, t) from None
    except (ProcessLookupError, FileNotFoundError):
        raise EnterError("NOT_FOUND", f"process {target.pid} of the container exited", gone=True) from None
    finally:
        for fd in fds.values():
            os.close(fd)


def _setns_error(err: OSError, what: str) -> EnterError:
    if err.errno == errno.ESRCH:
        return EnterError("NOT_FOUND", f"process of the container exited while joining {what}", gone=True)
    if err.errno == errno.EPERM:
        return EnterError("PERMISSION_DENIED", f"the kernel refused to join {what}: {err.strerror}")
    return EnterError("INTERNAL", f"cannot join {what}: {err.strerror}")


# -- the session's processes -------------------------------------------------------------------------
@dataclass
class Entry:
    """One session as the helper holds it: what the enterer prepared; the reaper inherits it by fork."""

    plan: Plan
    fds: dict[str, int]
    status: socket.socket
    target: Target | None = None
    namespaces: list[str] = field(default_factory=list)
    creds: Creds | None = None
    confinement: confine.Confinement | None = None
    missing: list[str] = field(default_factory=list)  # what of the confinement could not be reproduced
    env: dict[bytes, bytes] = field(default_factory=dict)
    tools: toolbox.Prepared | None = None
    reaper_plan: bytes = b""  # the program found (or why not), argv and environment: see spawn.prepare_spawn

    def report(self, event: str, **fields: Any) -> None:
        with contextlib.suppress(OSError):
            send_msg(self.status, {"event": event, **fields})


def join_cgroup(path: str) -> bool:
    """Move this process into a cgroup. Costs an RCU grace period (5-20 ms), so the fork server does
    it once, and every session's processes inherit the cgroup by fork."""
    try:
        fd = os.open(f"{path}/cgroup.procs", os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    except OSError as err:
        sys.stderr.write(f"nsinspect-enter: cannot join cgroup {path}: {err}\n")
        return False
    return True


def enterer(msg: dict[str, Any], received: list[int]) -> int:
    """The enterer's whole life: prepare, confine, join, fork the reaper, wait for it.

    Outside the target's pid namespace, so invisible to the pod (hostPID pods aside, which see the
    agent itself). Everything that needs the node's privileges or the node's files happens here;
    the reaper it forks is as the container's own processes are, and holds nothing of the node."""
    fds = dict(zip(msg["fds"], received, strict=True))
    status = socket.socket(fileno=fds.pop("status"))
    request, _ = recv_msg(status, size=PLAN_MAX)  # on the session's own socket (see Session.helper_message)
    if request is None:
        return 1
    s = Entry(Plan.from_json(request["plan"]), fds, status)
    _stdio_to_012(s)
    with contextlib.suppress(OSError):
        set_name(b"nsinspect-enter")
    try:
        _prepare_and_join(s)
    except EnterError as err:
        s.report("error", code=err.code, message=str(err), gone=err.gone, unconfined=err.unconfined)
        return 1
    except OSError as err:
        s.report("error", code="INTERNAL", message=f"entering the container failed: {err}")
        return 1
    if not _reaper:
        s.report("error", code="FAILED_PRECONDITION", message="this agent has no session reaper (nsinspect-reaper): "
                 "build it (hack/setup) or point --reaper at it")
        return 1
    plan_r, plan_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError as err:  # EAGAIN: the pod's pids limit, say
        s.report("error", code="RESOURCE_EXHAUSTED", message=f"cannot start the session in the container: fork: "
                 f"{err.strerror} (the pod's pids limit?)")
        return 1
    if pid == 0:
        try:
            _exec_reaper(s, plan_r)
        except BaseException as err:  # a child must never return into the fork server
            _internal_error(err)
        finally:
            os._exit(1)
    os.close(plan_r)
    with contextlib.suppress(OSError):  # a reaper that died (the pod killed it) reads nothing
        _write_all(plan_w, s.reaper_plan)
    os.close(plan_w)
    confinement = s.confinement
    s.report("entered", enterer=os.getpid(), reaper=pid, namespaces=s.namespaces,
             confined=confinement.applied(s.missing) if confinement else [], missing=list(s.missing))
    _close_session(s)
    while True:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        break
    return 0


def _stdio_to_012(s: Entry) -> None:
    """The session's stdio becomes our 0-2, in place of the fork server's (one of them the agent's
    stderr, a file of the node's): the reaper, which the pod can see, inherits nothing else."""
    names = ("stdin", "stdout", "stderr")
    if not all(n in s.fds for n in names):
        return
    received = {s.fds[n] for n in names}
    for target, name in enumerate(names):
        os.dup2(s.fds[name], target)
    for fd in received - {0, 1, 2}:
        os.close(fd)
    s.fds.update(stdin=0, stdout=1, stderr=2)


def _prepare_and_join(s: Entry) -> None:
    plan = s.plan
    s.target = target = Target.open(plan.pid, plan.start_time)
    s.namespaces = choose_namespaces(plan, target)
    joins_user = "user" in s.namespaces
    s.creds = Creds.read(target, joins_user)
    s.env = read_environ(target, plan)
    if plan.confine != "none":
        try:
            _confine(s, target)
        except confine.TracerStuck as err:  # we exit now, which lets the container's process go on
            raise EnterError("UNAVAILABLE", f"{err.strerror}: try again") from None
    root = cwd = -1
    try:
        if plan.tools:
            s.tools = toolbox.prepare(plan.toolbox, target.dirfd)
        toolbox.forget()  # the fork server's copy: cloned (or not needed), and not for the reaper
        if not plan.tools:
            root = os.open("root", os.O_PATH | os.O_DIRECTORY, dir_fd=target.dirfd)
            cwd = os.open("cwd", os.O_PATH | os.O_DIRECTORY, dir_fd=target.dirfd)
        # tools mode: the user namespace last, once its mounts are made (they need the node's)
        join(target, [t for t in s.namespaces if not (plan.tools and t == "user")], plan.join)
        if plan.tools:
            assert s.tools is not None
            toolbox.enter_root(s.tools)
            s.tools = None
            if joins_user:
                setns(target.pidfd, CLONE["user"])
        else:  # as nsenter: fchdir(root), chroot("."), chdir("/"), fchdir(wd)
            os.fchdir(root)
            os.chroot(".")
            if plan.root:
                _chdir_checked(plan.root, "root")
                os.chroot(".")
            os.chdir("/")
            if not plan.root:
                os.fchdir(cwd)
    finally:
        for fd in (root, cwd):
            if fd >= 0:
                os.close(fd)
    target.close()  # the last fd of the node's we held
    s.target = None
    _become_target(s)
    if plan.workdir or plan.tools:  # as the container's user: it reaches no further than the container could
        _chdir_checked(plan.workdir or "/", "working directory")
    prepare_spawn(s)


def _confine(s: Entry, target: Target) -> None:
    """Read the container's confinement and take what is taken through the node's /proc (cgroups,
    oom_score_adj, LSM label); seccomp and the ids come last (see _become_target). What cannot be
    reproduced refuses the session, unless the plan says the caller may go unconfined."""
    s.confinement = confinement = confine.read(target)
    missing = list(confinement.missing)
    if not missing or s.plan.confine == "best":
        missing += confine.apply_process(confinement)
    if missing and s.plan.confine != "best":
        raise EnterError("FAILED_PRECONDITION", "cannot give the command the container's confinement here ("
                         + "; ".join(missing) + ")", unconfined=True)
    s.missing = missing


def _become_target(s: Entry) -> None:
    """The container's limits, seccomp filter and credentials (unless privileged), in runc's order:
    the filter before the ids without no_new_privs (loading it needs CAP_SYS_ADMIN then), after
    them with it. Then non-dumpable again: a change of ids resets that to fs.suid_dumpable."""
    c = s.confinement
    try:
        if c is not None and (failed := confine.apply_rlimits(c)):
            if s.plan.confine != "best":
                raise EnterError("FAILED_PRECONDITION", "cannot give the command the container's confinement here ("
                                 + "; ".join(failed) + ")", unconfined=True)
            s.missing += failed
        nnp = s.creds is not None and s.creds.no_new_privs
        if c is not None and c.seccomp and not nnp:
            _load_filter(s, c)
        if not s.plan.privileged and s.creds is not None:
            s.creds.apply(s.plan.user, s.plan.group)
        if c is not None and c.seccomp and nnp:
            _load_filter(s, c)
    except (OSError, OverflowError, ValueError) as err:
        code = "INVALID_ARGUMENT" if not isinstance(err, OSError) or err.errno == errno.EINVAL else "INTERNAL"
        raise EnterError(code, f"cannot take the container's credentials: "
                               f"{err.strerror if isinstance(err, OSError) and err.strerror else err}") from None
    prctl(PR_SET_DUMPABLE, 0)


def _load_filter(s: Entry, c: confine.Confinement) -> None:
    try:
        confine.load_filter(c.seccomp, c.seccomp_flags)
    except OSError as err:
        if s.plan.confine != "best":
            raise EnterError("FAILED_PRECONDITION", f"cannot load the container's seccomp filter: {err.strerror}",
                             unconfined=True) from None
        s.missing.append(f"seccomp: {err.strerror}")


def _chdir_checked(path: str, what: str) -> None:
    try:
        os.chdir(path)
    except OSError as err:
        raise EnterError("INVALID_ARGUMENT", f"{what} {path!r} in the container: {err.strerror}") from None


def _close_session(s: Entry) -> None:
    for fd in set(s.fds.values()):
        with contextlib.suppress(OSError):
            os.close(fd)
    s.fds.clear()
    if s.target is not None:
        s.target.close()
    if s.tools is not None:
        with contextlib.suppress(OSError):
            s.tools.close()
        s.tools = None
    s.status.close()


def _exec_reaper(s: Entry, plan_r: int) -> None:
    """In the enterer's child: become the session's reaper (agent/enter/reaper.c, from its sealed memfd)
    with the session's stdio as 0-2, its plan on 3 and the status socket on 4, and nothing else.
    Only ever returns by raising."""
    if not _reaper:
        raise OSError(errno.ENOENT, "no session reaper loaded")
    exe, plan, status = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (_reaper[0], plan_r, s.status.fileno()))
    os.dup2(plan, 3)  # dup2 makes them inheritable; everything else is close-on-exec
    os.dup2(status, 4)
    os.execve(exe, ["nsinspect-exec"], {})


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- the two ways the agent runs this helper ----------------------------------------------------------
def _internal_error(err: BaseException) -> None:
    """A bug's last word, without a traceback: printing one reads our source files by path, and after
    the chroot those paths are in the container's root, where the pod may have planted a file whose
    `coding:` line names a codec module of its own (code of the pod's, run in the node's pid
    namespace). The message alone touches no file."""
    with contextlib.suppress(Exception):
        os.write(2, f"nsinspect-enter: internal error: {type(err).__name__}: {err}\n".encode(errors="replace"))


def _ready(cgroup: str) -> None:
    """A helper's start: into its cgroup, the cgroup mounts read once for every enterer, whatever
    the enterer's code loads lazily loaded now, then nothing more loaded at all."""
    if cgroup:
        join_cgroup(cgroup)
    confine.cgroup_mounts()
    _warm_up()
    _seal()


def _seal() -> None:
    """From here on this process (and every enterer it forks) imports nothing and reads no file of
    its own accord: only what is already loaded runs. An enterer runs Python after joining the
    container's mount namespace, where every path names a file of the pod's; an import (a lazy one
    in the standard library, a codec looked up by name) or a warning's source line would read it."""
    sys.meta_path[:] = [finder for finder in sys.meta_path
                        if finder in (importlib.machinery.BuiltinImporter, importlib.machinery.FrozenImporter)]
    sys.path_hooks.clear()
    sys.path_importer_cache.clear()
    sys.path[:] = []
    warnings.simplefilter("ignore")
    linecache.clearcache()
    linecache.getlines = lambda *_args, **_kwargs: []
    linecache.updatecache = lambda *_args, **_kwargs: []



@dataclass
class _Spare:
    """An enterer forked ahead of time, waiting for its request: the fork is off the client's path."""

    pid: int
    sock: socket.socket

    @classmethod
    def fork(cls, inherited: Sequence[int]) -> _Spare:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _forked(ours.fileno(), *inherited)
                _warm_up()
                msg, fds = recv_msg(theirs)
                theirs.close()
                code = 0 if msg is None else enterer(msg, fds)
            except BaseException as err:  # never return into the fork server
                _internal_error(err)
            finally:
                os._exit(code)
        theirs.close()
        return cls(pid, ours)


def _warm_up() -> None:
    """Run the enterer's reading code once on ourselves while nobody waits: a forked Python process
    pays a copied page for every page it first writes (reference counts), so pay them now."""
    with contextlib.suppress(Exception):
        me = Target.open(os.getpid(), 0)
        try:
            plan = Plan.from_json(Plan(pid=me.pid, start_time=0, argv=("true",)).to_json())
            choose_namespaces(plan, me)
            Creds.read(me, False)
            read_environ(me, plan)
            _find("true", {b"PATH": os.defpath.encode()})
            for cap in range(41):
                prctl(PR_CAPBSET_READ, cap)  # the same ctypes path as the drops
        finally:
            me.close()


def _forked(*close: int) -> None:
    """In a child of the fork server: its signal set-up and fds are not ours."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    for fd in close:
        os.close(fd)


def serve(fd: int, cgroup: str = "") -> int:
    """The fork server: hands each request to a spare enterer (or forks one), until the agent hangs up.
    It never answers: the enterer reports on the session's status socket (and if none could be
    started, that socket closes with nothing said).

    SPARES are kept, and refilled REFILL_DELAY after a request, not at once: forking (and warming a
    spare up) competes for the CPU with the session that is starting."""
    _ready(cgroup)
    gc.freeze()  # what is here now stays untouched by collections in the children: fewer copied pages
    sock = socket.socket(fileno=fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    spares: list[_Spare] = []
    refill_at = 0.0
    while True:
        _reap_children()
        inherited = [fd, wake_r, wake_w, *(sp.sock.fileno() for sp in spares)]  # not for the children
        now = time.monotonic()
        if len(spares) < SPARES and now >= refill_at:
            try:
                spares.append(_Spare.fork(inherited))
            except OSError as err:
                sys.stderr.write(f"nsinspect-enter: cannot fork a spare enterer: {err}\n")
                refill_at = now + 1
            continue
        wait = None if len(spares) >= SPARES else max(0, int((refill_at - now) * 1000) + 1)
        ready = {fd for fd, _ in poller.poll(wait)}
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
        if sock.fileno() not in ready:
            continue
        try:
            data, fds = recv_raw(sock)  # relayed as they are: the enterer decodes them
        except OSError:
            return 0
        if not data:
            return 0
        refill_at = time.monotonic() + REFILL_DELAY
        spare = spares.pop(0) if spares else None
        try:  # no answer: the enterer reports on the session's status socket (or its closing does)
            _start_enterer(spare, data, fds, inherited)
        except OSError as err:
            sys.stderr.write(f"nsinspect-enter: cannot start an enterer: {err}\n")
        finally:
            for received in fds:
                os.close(received)
            if spare is not None:
                spare.sock.close()


def _start_enterer(spare: _Spare | None, data: bytes, fds: list[int], inherited: Sequence[int]) -> None:
    if spare is not None:
        try:
            socket.send_fds(spare.sock, [data], fds)
            return
        except OSError:
            pass  # it died: fork one now
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _forked(*inherited)
            code = enterer(json.loads(data), fds)
        except BaseException as err:  # never return into the fork server
            _internal_error(err)
        finally:
            os._exit(code)


def _reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def once(fd: int, cgroup: str = "") -> int:
    """A freshly spawned helper for one session: it is the enterer itself."""
    _ready(cgroup)
    sock = socket.socket(fileno=fd)
    msg, fds = recv_msg(sock)
    sock.close()
    try:
        return 1 if msg is None else enterer(msg, fds)
    except BaseException as err:  # not the interpreter's own traceback: see _internal_error
        _internal_error(err)
        return 1


def main(argv: list[str] | None = None) -> int:
    """serve|once FD; the cgroup comes in $NSINSPECT_EXEC_CGROUP (an argument would show in the
    pod's `ps`: the reaper is visible there)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("serve", "once"):
        print("usage: python -m nsinspect.agent.enter.helper serve|once FD", file=sys.stderr)
        return 2
    if exe := os.environ.pop(EXE_ENV, ""):
        os.close(int(exe))
    cgroup = os.environ.pop(CGROUP_ENV, "")
    if path := os.environ.pop(REAPER_ENV, ""):
        try:
            _reaper.append(sealed_copy(path, "nsinspect-exec"))  # once: every session's reaper is exec'd from it
        except OSError as err:
            sys.stderr.write(f"nsinspect-enter: cannot load the session reaper {path}: {err}\n")
    if tools := os.environ.pop(TOOLBOX_ENV, ""):
        try:
            toolbox.load(tools)  # once: every session clones it
        except OSError as err:
            sys.stderr.write(f"nsinspect-enter: cannot load the toolbox {tools}: {err}\n")
    prctl(PR_SET_DUMPABLE, 0)  # from the start, and inherited by every enterer and reaper (see reaper)
    return serve(int(args[1]), cgroup) if args[0] == "serve" else once(int(args[1]), cgroup)


if __name__ == "__main__":
    from .helper import main as _main  # the module proper, not a second __main__ copy

    sys.exit(_main())
