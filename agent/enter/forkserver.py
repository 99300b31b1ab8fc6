"""The namespace-entering helper's entry: the fork server, its spare enterers, and `python -m`.

setns into a mount or user namespace needs a single-threaded process, so this never runs inside
the gRPC server. The agent starts `python -m nsinspect.agent.enter.forkserver serve FD` once: a fork
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
                        minimal environment; its import system sealed after warm-up (warmup.seal); it never
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

The enterer's steps are in enterer.py, holding and joining the target in join.py, the plan in
core/plan.py, the syscalls in linux/syscalls.py, the command's credentials and environment in
creds.py, the container's confinement in confine.py, and finding the program and loading the reaper
in spawn.py, the warm-up and sealing before the first session in warmup.py.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..linux.helperwire import recv_msg, recv_raw
from ..linux.syscalls import PR_SET_DUMPABLE, prctl
from . import toolbox
from .enterer import enterer
from .failure import internal_error
from .spawn import REAPER_ENV, load_reaper
from .warmup import make_ready, warm_up

SPARES, REFILL_DELAY = 2, 0.008
CGROUP_ENV = "NSINSPECT_EXEC_CGROUP"
TOOLBOX_ENV = "NSINSPECT_TOOLBOX"
EXE_ENV = "NSINSPECT_EXE_FD"  # the sealed interpreter we were exec'd from: closed at once


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
                warm_up()
                msg, fds = recv_msg(theirs)
                theirs.close()
                code = 0 if msg is None else enterer(msg, fds)
            except BaseException as err:  # never return into the fork server
                internal_error(err)
            finally:
                os._exit(code)
        theirs.close()
        return cls(pid, ours)


def _forked(*close: int) -> None:
    """In a child of the fork server: its signal set-up and fds are not ours."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    for fd in close:
        os.close(fd)


def fork_server(fd: int, cgroup: str = "") -> int:
    """The fork server: hands each request to a spare enterer (or forks one), until the agent hangs up.
    It never answers: the enterer reports on the session's status socket (and if none could be
    started, that socket closes with nothing said).

    SPARES are kept, and refilled REFILL_DELAY after a request, not at once: forking (and warming a
    spare up) competes for the CPU with the session that is starting."""
    make_ready(cgroup)
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
            internal_error(err)
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
    make_ready(cgroup)
    sock = socket.socket(fileno=fd)
    msg, fds = recv_msg(sock)
    sock.close()
    try:
        return 1 if msg is None else enterer(msg, fds)
    except BaseException as err:  # not the interpreter's own traceback: see failure.internal_error
        internal_error(err)
        return 1


def main(argv: list[str] | None = None) -> int:
    """serve|once FD; the cgroup comes in $NSINSPECT_EXEC_CGROUP (an argument would show in the
    pod's `ps`: the reaper is visible there)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("serve", "once"):
        print("usage: python -m nsinspect.agent.enter.forkserver serve|once FD", file=sys.stderr)
        return 2
    if exe := os.environ.pop(EXE_ENV, ""):
        os.close(int(exe))
    cgroup = os.environ.pop(CGROUP_ENV, "")
    if path := os.environ.pop(REAPER_ENV, ""):
        try:
            load_reaper(path)  # once: every session's reaper is exec'd from it
        except OSError as err:
            sys.stderr.write(f"nsinspect-enter: cannot load the session reaper {path}: {err}\n")
    if tools := os.environ.pop(TOOLBOX_ENV, ""):
        try:
            toolbox.load(tools)  # once: every session clones it
        except OSError as err:
            sys.stderr.write(f"nsinspect-enter: cannot load the toolbox {tools}: {err}\n")
    prctl(PR_SET_DUMPABLE, 0)  # from the start, and inherited by every enterer and reaper (see reaper)
    return fork_server(int(args[1]), cgroup) if args[0] == "serve" else once(int(args[1]), cgroup)


if __name__ == "__main__":
    from .forkserver import main as _main  # the module proper, not a second __main__ copy

    sys.exit(_main())
