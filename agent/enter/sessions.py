"""Exec sessions on the agent's side: the helper that enters namespaces, each session's pipes or
pty, the limit on concurrent sessions, and a teardown that leaves nothing behind.

A session's processes live in its container's cgroups, as a CRI exec's do (the enterer moves
there: see confine.py), so the pod's memory, pids and CPU limits hold for them. Within the pod, a
session is its reaper's subtree: the reaper is a child subreaper, so what daemonizes stays below
it. A session ends by killing that subtree in passes until a pass finds nothing alive (a killed
process cannot fork, so each pass leaves only what was forked during it, and the pod's pids limit
bounds even a fork bomb); the reaper reaps what was killed, so nothing is left as a zombie in the
pod. A pod process that kills the reaper first leaves what the session had started to the
container's init, as kubectl exec leaves what a command daemonized: with the container's own
confinement, so nothing it could not have started itself.

The helpers themselves (the fork server and its spare enterers) live in a cgroup of the agent's
(nsinspect-exec.<agent pid>, under the agent's own, on the unified hierarchy), joined once by the
fork server (a move costs an RCU grace period). An agent that starts finds the cgroups of agents
that died and kills what is in them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..core.errors import ResourceExhausted
from ..linux.helperwire import recv_from, send_msg
from . import confine, confinecheck
from .helper import CGROUP_ENV, EXE_ENV, FD_NAMES, TOOLBOX_ENV, Plan
from .spawn import REAPER_ENV, default_reaper, sealed_copy

log = logging.getLogger(__name__)
HELPER = (sys.executable, "-m", "nsinspect.agent.enter.helper")
CHUNK = 1 << 20  # the most one output message carries
BATCH = 256 * 1024  # in a bulk stream, what a message waits for (see Session.read_output)
PIPE_SIZE = 1 << 20
KILL_PASSES, KILL_WITHIN = 1000, 5.0
CGROUP_MOUNT = Path("/sys/fs/cgroup")


# -- the helper ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Launched:
    pid: int  # the enterer, when known at once (else it reports itself, and is checked to be a child of:)
    process: subprocess.Popen[bytes] | None = None  # when spawned: ours to reap
    parent: int = 0  # the fork server


class Launcher(Protocol):
    def launch(self, msg: dict[str, Any], fds: list[int]) -> Launched: ...

    def close(self) -> None: ...


def _helper_env(cgroup: str, reaper: str, toolbox: str = "") -> dict[str, str]:
    """The helper's environment: what it needs, nothing of the agent's (a pod process that can
    ptrace reads a reaper's /proc/PID/environ, which is the fork server's)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "PYTHONHOME", "LANG", "LC_ALL")}
    return {"PATH": os.defpath, **keep, CGROUP_ENV: cgroup, REAPER_ENV: reaper, TOOLBOX_ENV: toolbox}


_interpreter: list[int] = []  # the sealed copy, made once per agent


def _popen_helper(mode: str, sock: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start the helper from a sealed memfd copy of the interpreter, not from its file (runc's answer
    to CVE-2019-5736): every session's reaper is a fork of it and visible to the pod, and a pod
    process that can ptrace opens /proc/<reaper>/exe, which would be the node's python3, to rewrite
    once nothing runs it. The copy (about 7 MB, 3 ms, once) cannot be written: it is sealed."""
    if not _interpreter:
        _interpreter.append(sealed_copy(os.path.realpath(sys.executable), "nsinspect-python"))
    exe = _interpreter[0]
    return subprocess.Popen([*HELPER, mode, str(sock)], executable=f"/proc/self/fd/{exe}",
                            env={**env, EXE_ENV: str(exe)}, pass_fds=(sock, exe), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, start_new_session=True)


class ForkServer:
    """The helper started once (a fresh, single-threaded interpreter); each session is one fork of it."""

    def __init__(self, cgroup: str = "", toolbox: str = "", reaper: str = "") -> None:
        self.cgroup = cgroup
        self.reaper = reaper or default_reaper()
        self.toolbox = toolbox  # loaded once by the server (toolbox.load)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._start()

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self._proc = _popen_helper("serve", theirs.fileno(), _helper_env(self.cgroup, self.reaper, self.toolbox))
        ours.settimeout(10)
        self._sock = ours

    def _stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def launch(self, msg: dict[str, Any], fds: list[int]) -> Launched:
        with self._lock:
            assert self._sock is not None
            try:
                send_msg(self._sock, msg, fds)
            except OSError as err:  # it died since the last session: start another, once
                log.warning("the exec fork server is gone: restarting it", extra={"error": str(err)})
                self._stop()
                self._start()
                assert self._sock is not None
                send_msg(self._sock, msg, fds)
            assert self._proc is not None
            return Launched(0, parent=self._proc.pid)  # the enterer says who it is on the status socket

    def close(self) -> None:
        with self._lock:
            self._stop()


class Spawner:
    """A fresh interpreter per session: no long-lived helper, but an interpreter start-up (and a
    cgroup move) while the client waits."""

    def __init__(self, cgroup: str = "", reaper: str = "") -> None:
        self.cgroup = cgroup
        self.reaper = reaper or default_reaper()

    def launch(self, msg: dict[str, Any], fds: list[int]) -> Launched:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with ours, theirs:
            proc = _popen_helper("once", theirs.fileno(), _helper_env(self.cgroup, self.reaper))
            send_msg(ours, msg, fds)
        return Launched(proc.pid, proc)

    def close(self) -> None:
        pass


# -- the cgroup ------------------------------------------------------------------------------------
def _unified_mount() -> Path | None:
    for path in (CGROUP_MOUNT, CGROUP_MOUNT / "unified"):
        if (path / "cgroup.controllers").exists():
            return path
    return None


class Cgroup:
    """The agent's cgroup for its exec helpers: <own cgroup>/nsinspect-exec.<agent pid>."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls) -> Cgroup | None:
        mount = _unified_mount()
        if mount is None:
            log.warning("no unified cgroup hierarchy: the exec helpers run in the agent's cgroup")
            return None
        with open("/proc/self/cgroup") as f:
            own = next((line.strip()[3:] for line in f if line.startswith("0::")), "/")
        parent = mount / own.lstrip("/")
        _sweep(parent)
        path = parent / f"nsinspect-exec.{os.getpid()}"
        try:
            path.mkdir(exist_ok=True)
        except OSError as err:
            log.warning("cannot make a cgroup for the exec helpers: they run in the agent's",
                        extra={"cgroup": str(path), "error": str(err)})
            return None
        return cls(path)

    def close(self) -> None:
        _remove(self.path)


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
    except OSError:
        return False
    return True


def _pids(path: Path) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    return []


def _remove(path: Path, timeout: float = 2.0) -> None:
    """Kill everything in a session cgroup and remove it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _write(path / "cgroup.kill", "1"):
            for pid in _pids(path):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
    log.error("cannot remove the exec sessions' cgroup", extra={"cgroup": str(path)})


def _sweep(parent: Path) -> None:
    """Kill and remove what an agent that died left behind."""
    with contextlib.suppress(OSError):
        for stale in parent.glob("nsinspect-exec.*"):
            pid = stale.name.rpartition(".")[2]
            if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
                log.warning("killing what a dead agent's exec sessions left",
                            extra={"cgroup": str(stale), "pids": _pids(stale)})
                _remove(stale)


def _alive(pid: int) -> bool:
    """Not gone and not a zombie (a killed process stays in the task list until reaped)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        return raw[raw.rindex(b")") + 2:raw.rindex(b")") + 3] not in (b"Z", b"X")
    return False


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc/PID/task/*/children."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
                found += kids
                todo += kids
    return found


def _parent(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        return int(raw[raw.rindex(b")") + 2:].split()[1])
    return 0


# -- one session ---------------------------------------------------------------------------------------
class Session:
    """A running session's fds, what the helper reported, and the means to end it."""

    def __init__(self, sid: str, plan: Plan, want_stdin: bool, size: tuple[int, int] | None) -> None:
        self.id = sid
        self.plan = plan
        self.enterer = 0
        self._helper = 0  # the fork server, whose child the enterer must be
        self.reaper = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.namespaces: list[str] = []
        self.confined: list[str] = []  # the parts of the container's confinement the command got
        self.unconfined: list[str] = []  # what could not be reproduced (only with nsenter semantics)
        self.entered = self.started = self._go_sent = False
        self.exec_error = ""
        self.error: dict[str, Any] | None = None
        self.exit: tuple[int, int] | None = None
        self.helper_gone = False
        self.bytes_in = self.bytes_out = 0
        self.last_activity = time.monotonic()
        self._lock = threading.Lock()
        self._status_lock = threading.Lock()
        self._closed = self._tearing = False
        self._child: dict[str, int] = {}  # the helper's ends, closed once handed over
        self.outputs: dict[int, str] = {}
        self._stdin = -1
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # each message says who sent it
        self.status = ours
        self._child["status"] = theirs.detach()
        try:
            self._make_stdio(want_stdin, size)
        except BaseException:
            self._close_child_ends()
            self._close_ours()
            raise

    def _make_stdio(self, want_stdin: bool, size: tuple[int, int] | None) -> None:
        if self.plan.tty:
            master, slave = os.openpty()
            self._child.update(stdin=slave, stdout=slave, stderr=slave)
            os.set_blocking(master, False)
            if size:
                self._winsize(master, *size)
            self._stdin = master
            self.outputs[master] = "stdout"
            return
        r, w = os.pipe2(os.O_CLOEXEC)
        self._child["stdin"] = r
        if want_stdin:
            os.set_blocking(w, False)
            self._stdin = w
        else:
            os.close(w)  # the command reads end-of-file
        for name in ("stdout", "stderr"):
            r, w = os.pipe2(os.O_CLOEXEC)
            self._child[name] = w
            self.outputs[r] = name
            with contextlib.suppress(OSError):
                fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            os.set_blocking(r, False)

    def helper_message(self) -> tuple[dict[str, Any], list[int]]:
        """What the fork server relays: the session's fds alone. The plan (argv, environment) goes to
        the enterer on the session's own socket, so the fork server, whose memory every later
        session's processes inherit, never holds another session's."""
        names = [n for n in FD_NAMES if n in self._child]
        send_msg(self.status, {"plan": self.plan.to_json()})
        return {"fds": names}, [self._child[n] for n in names]

    def launched(self, how: Launched) -> None:
        self.enterer, self.process, self._helper = how.pid, how.process, how.parent
        self._close_child_ends()

    def _close_child_ends(self) -> None:
        for fd in set(self._child.values()):
            os.close(fd)
        self._child = {}

    # -- what the helper says
    def read_status(self) -> None:
        """Take every message waiting on the status socket; EOF means the helper processes are gone."""
        with self._status_lock:
            while not self.helper_gone and not self._closed and self._drain_status():
                pass

    def _from_session(self, sender: int, msg: dict[str, Any]) -> bool:
        """Whether a status message comes from this session's enterer or reaper, by the sender's pid
        as the kernel gives it (SCM_CREDENTIALS): the reaper's end of the socket is within reach of a
        pod process that can ptrace, and pids taken from a forged message would be what teardown kills."""
        if msg.get("event") == "entered":
            if self.entered:
                return False  # said once, by the enterer, before the reaper could say anything
            enterer, reaper = int(msg["enterer"]), int(msg["reaper"])
            known = enterer == self.enterer if self.enterer else _parent(enterer) == self._helper
            return sender == enterer and known and _parent(reaper) == enterer
        if self.entered:  # the reaper speaks only once it has its go
            return self._go_sent and sender in (self.enterer, self.reaper)
        # Before "entered" only the enterer can have written; an error names no pid, and its sender
        # may have exited (and so have no parent to check) by the time we read it.
        return msg.get("event") == "error"

    def _event(self, msg: dict[str, Any], sender: int) -> None:
        if not self._from_session(sender, msg):
            log.warning("ignored a status message not from the session's helpers",
                        extra={"session": self.id, "sender": sender, "event": str(msg.get("event"))[:40]})
            return
        event = msg.get("event")
        if event == "entered":
            self.reaper, self.namespaces, self.entered = int(msg["reaper"]), list(msg["namespaces"]), True
            self.enterer = int(msg["enterer"])
            self.confined, self.unconfined = list(msg.get("confined", [])), list(msg.get("missing", []))
        elif event == "started":
            self.started = True
        elif event == "exec_failed":
            self.started, self.exec_error = True, str(msg.get("message", "cannot execute"))
        elif event == "error":
            self.error = msg
        elif event == "exit":
            self.exit = (int(msg["code"]), int(msg["signal"]))

    def wait_started(self, timeout: float) -> None:
        """Until the command runs, could not be executed, or entering failed (then `error` is set)."""
        deadline = time.monotonic() + timeout
        while not (self.started and self.entered) and self.error is None and not self.helper_gone:
            if self.entered and not self._go_sent:
                self._go()
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                self.error = {"code": "DEADLINE_EXCEEDED", "message": "the exec helper did not answer in time"}
                return
            ready, _, _ = select.select([self.status.fileno(), self._wake_r], [], [], left)
            if self._wake_r in ready:  # cancelled (see cancel): the caller is gone
                self.error = {"code": "CANCELLED", "message": "the caller went away while the session started"}
                return
            self.read_status()
        if self.error is None and not self.started:
            self.error = {"code": "INTERNAL", "message": "the exec helper exited without running the command"}

    def _go(self) -> None:
        """The reaper waits for this: its confinement checked from the node's side first."""
        self._go_sent = True
        plan = self.plan
        skip = confine.skipped(self.unconfined) if plan.confine == "best" else set()  # strict: all of it
        why = confinecheck.mismatch(plan.pid, self.reaper, skip, plan.user is None and plan.group is None,
                                    plan.confine == "none") if _parent(self.reaper) == self.enterer else \
            "the session's reaper is gone"
        if why:
            log.error("an exec session's confinement differs from its container's: refused",
                      extra={"session": self.id, "reaper": self.reaper, "difference": why})
            self.error = {"code": "INTERNAL", "message": f"the command's confinement did not match the container's "
                                                         f"({why}): the session was refused"}
            return
        with self._lock, contextlib.suppress(OSError):
            if not self._closed:
                send_msg(self.status, {"go": True})

    # -- input from the client
    def write_stdin(self, data: bytes) -> None:
        """Blocks while the command does not read (that is the flow control), but never past teardown."""
        self.bytes_in += len(data)
        self.last_activity = time.monotonic()
        view = memoryview(data)
        while view:
            with self._lock:
                if self._stdin < 0:
                    return
                try:
                    view = view[os.write(self._stdin, view):]
                    continue
                except BlockingIOError:
                    poller = select.poll()
                    poller.register(self._stdin, select.POLLOUT)
                except OSError:  # the command closed its stdin or exited
                    return
            poller.poll(100)  # not holding the lock: teardown may close the fd meanwhile

    def close_stdin(self) -> None:
        with self._lock:
            if self._stdin < 0:
                return
            if self.plan.tty:  # a terminal has no end-of-file of its own: send ^D as a user would
                with contextlib.suppress(OSError):
                    os.write(self._stdin, termios.tcgetattr(self._stdin)[6][termios.VEOF])
                return
            os.close(self._stdin)
            self._stdin = -1

    def resize(self, rows: int, cols: int) -> None:
        with self._lock:
            if self.plan.tty and self._stdin >= 0:
                self._winsize(self._stdin, rows, cols)

    @staticmethod
    def _winsize(fd: int, rows: int, cols: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", min(rows, 0xFFFF), min(cols, 0xFFFF), 0, 0))

    def signal(self, signum: int) -> None:
        with self._lock, contextlib.suppress(OSError):
            if not self._closed:
                send_msg(self.status, {"signal": signum})

    # -- output to the client
    def read_output(self, fd: int, linger: float = 0.0) -> bytes | None:
        """A chunk, b"" at end of file, None when nothing is ready.

        With `linger` (a bulk stream is going on), keep collecting until BATCH bytes or until
        nothing more came for that long: each gRPC message costs about as much as 30 KiB of copying,
        and a writer like `head` writes 4 KiB at a time."""
        chunks: list[bytes] = []
        size, eof = 0, False
        while size < BATCH and not eof:
            try:
                data = os.read(fd, CHUNK - size)
            except BlockingIOError:
                if not linger or not chunks or not select.select([fd], [], [], linger)[0]:
                    break
                continue
            except OSError as err:
                if err.errno != errno.EIO:  # EIO: a pty whose last slave fd was closed, i.e. end of file
                    raise
                data = b""
            eof = not data  # returned now if nothing was read, else on the next call
            chunks.append(data)
            size += len(data)
            if not linger:
                break
        if not chunks:
            return None
        self.bytes_out += size
        if size:
            self.last_activity = time.monotonic()
        return b"".join(chunks)

    # -- the end
    @property
    def wake_fd(self) -> int:
        return self._wake_r

    def wake(self) -> None:
        """Interrupt the output loop; safe after teardown (the fd is never written once closed)."""
        with self._lock:
            if self._wake_w >= 0:
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"x")

    def cancel(self) -> None:
        """The call ended (cancelled, or the client went away): kill now, from gRPC's callback thread,
        and wake the output loop so that it tears the session down."""
        with self._lock:
            if self._closed:
                return
        self.kill()
        self.wake()

    def kill(self) -> None:
        """SIGKILL every process the session started (the reaper's subtree), in passes until one finds
        nothing alive: a killed process forks no more, so each pass leaves at most what was forked
        while it ran. The reaper reaps them, then exits.

        Only once the reaper is known: until then no command runs, and the helper ends itself
        when the status socket closes."""
        self.read_status()
        if not self.reaper or _parent(self.reaper) != self.enterer or not self._live_descendants():
            return
        give_up = time.monotonic() + KILL_WITHIN
        for _ in range(KILL_PASSES):
            pids = self._live_descendants()
            if not pids:
                break
            if time.monotonic() > give_up:
                log.error("exec session processes still alive after killing for a while", extra={
                    "session": self.id, "pids": pids[:20]})
                break
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 0.1  # dead (zombies until the reaper runs) before walking again
            while time.monotonic() < deadline and any(_alive(p) for p in pids):
                time.sleep(0.0005)

    def _live_descendants(self) -> list[int]:
        return [p for p in _descendants(self.reaper) if _alive(p)]

    def teardown(self, timeout: float = 1.0) -> None:
        """Kill everything, wait (bounded) for the helper to reap and exit, release every fd."""
        with self._lock:
            if self._tearing:
                return
            self._tearing = True
            self._close_child_ends()  # if the helper never got them, its end of status closes now
        self.kill()
        with self._lock:
            self._closed = True
            with contextlib.suppress(OSError):
                self.status.shutdown(socket.SHUT_WR)  # the reaper's cue: kill what is left, reap, exit
        # After the reaper's exit report, it has reaped the command and is ending itself (and ends
        # all the same on the closed socket): no need to wait. Otherwise, wait for it, bounded.
        deadline = time.monotonic() + (0 if self.exit is not None else timeout)
        while not self.helper_gone and (left := deadline - time.monotonic()) > 0:
            select.select([self.status], [], [], left)
            self._drain_status()
        if not self.helper_gone and self.exit is None:
            log.error("exec helper still running after teardown", extra={"session": self.id, "reaper": self.reaper})
        with self._lock:
            self._close_ours()
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("spawned exec helper did not exit", extra={"session": self.id, "pid": self.process.pid})

    def _drain_status(self) -> bool:
        """Take one message from the status socket; False when none is waiting or the helper is gone."""
        try:
            data, fds, sender = recv_from(self.status, nowait=True)
        except BlockingIOError:
            return False
        except OSError:
            data, fds, sender = b"", [], 0
        for fd in fds:
            os.close(fd)  # nobody sends us fds
        if not data:
            self.helper_gone = True
            return False
        try:
            msg = json.loads(data)
            self._event(msg if isinstance(msg, dict) else {}, sender)
        except (ValueError, KeyError, TypeError) as err:  # not ours: a pod process wrote it
            log.warning("ignored a malformed status message", extra={"session": self.id, "error": str(err)})
        return True

    def _close_ours(self) -> None:
        for fd in {self._stdin, *self.outputs, self._wake_r, self._wake_w} - {-1}:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stdin = self._wake_r = self._wake_w = -1
        self.outputs = {}
        self.status.close()


# -- all sessions ---------------------------------------------------------------------------------------
class Sessions:
    """Admission (the concurrent-session limit), launch, and the agent-wide cleanup at exit."""

    def __init__(self, launcher: Launcher, cgroup: Cgroup | None, max_sessions: int) -> None:
        self.launcher = launcher
        self.cgroup = cgroup
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._active: dict[str, Session] = {}
        self._admitted = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._active)

    @contextlib.contextmanager
    def open(self, plan: Plan, want_stdin: bool, size: tuple[int, int] | None, sid: str = "") -> Iterator[Session]:
        """A launched session for the length of a with-block; torn down whatever happens."""
        with self._lock:
            if self._admitted >= self.max_sessions:
                raise ResourceExhausted(f"the agent already runs {self.max_sessions} exec sessions (--max-sessions)")
            self._admitted += 1
        sid = sid or uuid.uuid4().hex[:12]
        session: Session | None = None
        try:
            session = Session(sid, plan, want_stdin, size)
            with self._lock:
                self._active[sid] = session
            session.launched(self.launcher.launch(*session.helper_message()))
            yield session
        finally:
            if session is not None:
                session.teardown()
            with self._lock:
                self._active.pop(sid, None)
                self._admitted -= 1

    def close(self) -> None:
        with self._lock:
            active = list(self._active.values())
        for session in active:
            session.teardown()
        self.launcher.close()
        if self.cgroup is not None:
            self.cgroup.close()
