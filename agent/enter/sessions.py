"""Exec sessions on the agent's side, all of them: the limit on concurrent sessions, launch, and the
agent-wide cleanup at exit.

A session's processes live in its container's cgroups, as a CRI exec's do (the enterer moves
there: see confine.py), so the pod's memory, pids and CPU limits hold for them; within the pod they
are the reaper's subtree (subtree.py). The parts: the launchers that start the helper
(launchers.py), the helpers' own cgroup (cgroup.py), one session (session.py, its stdio in stdio.py).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator

from ..core.errors import ResourceExhausted
from ..core.plan import Plan
from .cgroup import Cgroup
from .launchers import Launcher
from .session import Session


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
