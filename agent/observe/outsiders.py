"""Processes outside a pod's cgroups that joined its pid or network namespace (nsenter, an exec
helper, a runtime hook): the one part of listing a pod that must look at every process of the node.

One pass over /proc answers every request waiting for it. A request joins the next pass that has
not started yet, never one under way, so its answer is as fresh as a pass of its own would be;
under load the node is walked once per round instead of once per request (ps of 15 pods at once on
a 3,000-process node: one walk, not fifteen). The pass itself is outsider_pass.py; the agent makes
it in a helper process of its own (pass_helper.py), off its interpreter lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .outsider_pass import Joined, Query, node_pass


@dataclass
class _Pass:
    queries: list[Query] = field(default_factory=list)
    go: threading.Event = field(default_factory=threading.Event)  # it may start: the one before it ended
    done: threading.Event = field(default_factory=threading.Event)
    hits: list[Joined] = field(default_factory=list)
    error: BaseException | None = None


PassMaker = Callable[[list[Query]], list[Joined]]


class OutsiderScan:
    """Shared by the agent's threads; `find` blocks until a pass that started after the call ends.
    `walk` makes the pass (default: outsider_pass.node_pass, in this process; the agent gives a
    pass_helper.WalkHelper)."""

    def __init__(self, walk: PassMaker | None = None) -> None:
        self.walk = walk
        self._lock = threading.Lock()
        self._running: _Pass | None = None
        self._next: _Pass | None = None
        self.passes = 0  # how many walks were made (for tests and benchmarks)

    def find(self, query: Query) -> list[Joined]:
        """Processes not in `query.known` that are in one of its pid namespaces or its network namespace."""
        if not query.pid_targets and query.net_target is None:
            return []
        with self._lock:
            if self._running is None:
                mine = self._running = _Pass([query])
                mine.go.set()
            else:
                if self._next is None:
                    self._next = _Pass()
                mine = self._next
                mine.queries.append(query)
            leads = mine.queries[0] is query
        if leads:
            mine.go.wait()
            try:
                mine.hits = (self.walk or node_pass)(mine.queries)
            except BaseException as err:
                mine.error = err
            finally:
                self._finish(mine)
        mine.done.wait()
        if mine.error is not None:
            raise mine.error
        return [j for j in mine.hits if j.pid not in query.known
                and (j.pid_ns in query.pid_targets or (query.net_target is not None and j.net_ns == query.net_target))]

    def _finish(self, ended: _Pass) -> None:
        with self._lock:
            self.passes += 1
            self._running, self._next = self._next, None  # the waiting pass, closed to newcomers, starts
            following = self._running
        ended.done.set()
        if following is not None:
            following.go.set()
