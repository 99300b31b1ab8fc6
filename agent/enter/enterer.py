"""The enterer: one session's process on the node's side, from its plan to the reaper it forks.

Forked by the fork server (or spawned for one session), outside the target's pid namespace and so
invisible to the pod (hostPID pods aside, which see the agent itself). Everything that needs the
node's privileges or the node's files happens here, in this order: the target held and verified
(join.py), its credentials, environment and confinement read, its cgroups joined, everything
opened, then its namespaces joined, its root taken, its seccomp filter and ids taken; the reaper it
forks last is as the container's own processes are, and holds nothing of the node (the stage
table is in forkserver.py). A failure is reported in the agent's terms (failure.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import InvalidArgument, ResourceExhausted, Unconfinable
from ..core.plan import PLAN_MAX, Plan
from ..linux.helperwire import recv_msg, send_msg
from ..linux.syscalls import CLONE, PR_SET_DUMPABLE, prctl, set_name, setns
from . import confine, toolbox
from .creds import RunAs, read_environ
from .failure import INTERNAL, NO_REAPER, TRY_AGAIN, EnterError, error_event, internal_error
from .join import HeldProcess, choose_namespaces, join
from .spawn import exec_reaper, reaper_loaded, reaper_plan


@dataclass
class Entry:
    """One session as the helper holds it: what the enterer prepared; the reaper inherits it by fork."""

    plan: Plan
    fds: dict[str, int]
    status: socket.socket
    target: HeldProcess | None = None
    namespaces: list[str] = field(default_factory=list)
    run_as: RunAs | None = None
    confinement: confine.Confinement | None = None
    missing: list[str] = field(default_factory=list)  # what of the confinement could not be reproduced
    env: dict[bytes, bytes] = field(default_factory=dict)
    tools: toolbox.Prepared | None = None
    reaper_plan: bytes = b""  # the program found (or why not), argv and environment: see spawn.reaper_plan

    def report(self, event: str, **fields: Any) -> None:
        self.send({"event": event, **fields})

    def send(self, msg: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            send_msg(self.status, msg)


def enterer(msg: dict[str, Any], received: list[int]) -> int:
    """The enterer's whole life: prepare, confine, join, fork the reaper, wait for it."""
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
        s.send(err.report())
        return 1
    except OSError as err:
        s.send(error_event(INTERNAL, f"entering the container failed: {err}"))
        return 1
    if not reaper_loaded():
        s.send(error_event(NO_REAPER, "this agent has no session reaper (nsinspect-reaper): "
                           "build it (hack/setup) or point --reaper at it"))
        return 1
    plan_r, plan_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError as err:  # EAGAIN: the pod's pids limit, say
        s.send(error_event(ResourceExhausted, f"cannot start the session in the container: fork: "
                           f"{err.strerror} (the pod's pids limit?)"))
        return 1
    if pid == 0:
        try:
            exec_reaper(plan_r, s.status.fileno())
        except BaseException as err:  # a child must never return into the fork server
            internal_error(err)
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
    s.target = target = HeldProcess.open(plan.pid, plan.start_time)
    s.namespaces = choose_namespaces(plan, target)
    joins_user = "user" in s.namespaces
    s.run_as = RunAs.read(target, joins_user)
    s.env = read_environ(target, plan)
    if plan.confine != "none":
        try:
            _confine(s, target)
        except confine.TracerStuck as err:  # we exit now, which lets the container's process go on
            raise EnterError(TRY_AGAIN, f"{err.strerror}: try again") from None
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
    s.reaper_plan = reaper_plan(plan, s.env)


def _confine(s: Entry, target: HeldProcess) -> None:
    """Read the container's confinement and take what is taken through the node's /proc (cgroups,
    oom_score_adj, LSM label); seccomp and the ids come last (see _become_target). What cannot be
    reproduced refuses the session, unless the plan says the caller may go unconfined."""
    s.confinement = confinement = confine.read(target)
    missing = list(confinement.missing)
    if not missing or s.plan.confine == "best":
        missing += confine.apply_process(confinement)
    if missing and s.plan.confine != "best":
        raise EnterError(Unconfinable, "cannot give the command the container's confinement here ("
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
                raise EnterError(Unconfinable, "cannot give the command the container's confinement here ("
                                 + "; ".join(failed) + ")", unconfined=True)
            s.missing += failed
        nnp = s.run_as is not None and s.run_as.no_new_privs
        if c is not None and c.seccomp and not nnp:
            _load_filter(s, c)
        if not s.plan.privileged and s.run_as is not None:
            s.run_as.apply(s.plan.user, s.plan.group)
        if c is not None and c.seccomp and nnp:
            _load_filter(s, c)
    except (OSError, OverflowError, ValueError) as err:
        kind = InvalidArgument if not isinstance(err, OSError) or err.errno == errno.EINVAL else INTERNAL
        raise EnterError(kind, f"cannot take the container's credentials: "
                               f"{err.strerror if isinstance(err, OSError) and err.strerror else err}") from None
    prctl(PR_SET_DUMPABLE, 0)


def _load_filter(s: Entry, c: confine.Confinement) -> None:
    try:
        confine.load_filter(c.seccomp, c.seccomp_flags)
    except OSError as err:
        if s.plan.confine != "best":
            raise EnterError(Unconfinable, f"cannot load the container's seccomp filter: {err.strerror}",
                             unconfined=True) from None
        s.missing.append(f"seccomp: {err.strerror}")


def _chdir_checked(path: str, what: str) -> None:
    try:
        os.chdir(path)
    except OSError as err:
        raise EnterError(InvalidArgument, f"{what} {path!r} in the container: {err.strerror}") from None


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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
