"""One exec session on the agent's side: its stdio and status socket, who may speak on that socket,
the start (the agent's go once the reaper's confinement checks out), and a teardown that leaves
nothing behind.

The status socket's far end is handed to the enterer and inherited by the reaper, which a pod
process that can ptrace may reach; so every message is taken for what the kernel says of its sender
(SCM_CREDENTIALS), and pids named in one are believed only when the process tree agrees
(_from_session). The reaper starts the command only on the agent's go, sent once confinecheck.py
has compared its confinement with the container's from the node's side. A failure is kept as the
enterer reported it, in the agent's terms (failure.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import subprocess
import threading
import time
from typing import Any

from ..core.errors import CallerGone
from ..core.plan import FD_NAMES, Plan
from ..linux.helperwire import recv_from, send_msg
from . import confine, confinecheck
from .failure import INTERNAL, TIMED_OUT, error_event
from .launchers import Launched
from .stdio import Stdio
from .subtree import kill_subtree, live_descendants, parent_pid

log = logging.getLogger(__name__)


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
        self.stdio = Stdio(plan.tty)
        self._lock = threading.Lock()
        self._status_lock = threading.Lock()
        self._closed = self._tearing = False
        self._child: dict[str, int] = {}  # the helper's ends, closed once handed over
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # each message says who sent it
        self.status = ours
        self._child["status"] = theirs.detach()
        try:
            self.stdio.make(want_stdin, size, self._child)
        except BaseException:
            self._close_child_ends()
            self._close_ours()
            raise

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
            known = enterer == self.enterer if self.enterer else parent_pid(enterer) == self._helper
            return sender == enterer and known and parent_pid(reaper) == enterer
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
                self.error = error_event(TIMED_OUT, "the exec helper did not answer in time")
                return
            ready, _, _ = select.select([self.status.fileno(), self._wake_r], [], [], left)
            if self._wake_r in ready:  # cancelled (see cancel): the caller is gone
                self.error = error_event(CallerGone, "the caller went away while the session started")
                return
            self.read_status()
        if self.error is None and not self.started:
            self.error = error_event(INTERNAL, "the exec helper exited without running the command")

    def _go(self) -> None:
        """The reaper waits for this: its confinement checked from the node's side first."""
        self._go_sent = True
        plan = self.plan
        skip = confine.skipped(self.unconfined) if plan.confine == "best" else set()  # strict: all of it
        why = confinecheck.mismatch(plan.pid, self.reaper, skip, plan.user is None and plan.group is None,
                                    plan.confine == "none") if parent_pid(self.reaper) == self.enterer else \
            "the session's reaper is gone"
        if why:
            log.error("an exec session's confinement differs from its container's: refused",
                      extra={"session": self.id, "reaper": self.reaper, "difference": why})
            self.error = error_event(INTERNAL, f"the command's confinement did not match the container's ({why}): "
                                               "the session was refused")
            return
        with self._lock, contextlib.suppress(OSError):
            if not self._closed:
                send_msg(self.status, {"go": True})

    def signal(self, signum: int) -> None:
        with self._lock, contextlib.suppress(OSError):
            if not self._closed:
                send_msg(self.status, {"signal": signum})

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
        """SIGKILL every process the session started (the reaper's subtree: see subtree.py).

        Only once the reaper is known: until then no command runs, and the helper ends itself
        when the status socket closes."""
        self.read_status()
        if not self.reaper or parent_pid(self.reaper) != self.enterer or not live_descendants(self.reaper):
            return
        kill_subtree(self.reaper, self.id)

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
        self.stdio.close()
        for fd in {self._wake_r, self._wake_w} - {-1}:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
        self.status.close()
