"""How the agent starts its exec helper: once as a fork server (ForkServer), or once per session
(Spawner), always from a sealed copy of the interpreter and with an environment of its own.

Either way the helper is a fresh, single-threaded interpreter with nothing of the agent in it
(python -m nsinspect.agent.enter.forkserver, see there): setns into a mount or user namespace needs
a single-threaded process. The fork server costs one interpreter start-up per agent; a spawned
helper costs one (and a cgroup move) while the client waits; testbed/bench/exec.py measures both.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from ..linux.helperwire import send_msg
from .forkserver import CGROUP_ENV, EXE_ENV, TOOLBOX_ENV
from .spawn import REAPER_ENV, default_reaper, sealed_copy

log = logging.getLogger(__name__)
HELPER = (sys.executable, "-m", "nsinspect.agent.enter.forkserver")


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
