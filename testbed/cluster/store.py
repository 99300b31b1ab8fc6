"""The stand-in's etcd: JSON objects under one global, monotonically increasing resourceVersion,
with a bounded event history that watches replay from.

Every write bumps the counter and appends one event; a watch from resourceVersion N replays the
events after N, or fails with 410 Expired when N is older than the history (as after an etcd
compaction; `compact()` forces that for tests). Objects go in and out as deep copies.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from testbed.cluster.status import already_exists, conflict, expired, not_found_error

Json = dict[str, Any]
Key = tuple[str, str, str]  # resource, namespace ("" for cluster-scoped), name
Predicate = Callable[[Json], bool]


@dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: str
    namespace: str
    old: Json | None
    new: Json


def _key(resource: str, obj: Json) -> Key:
    meta = obj["metadata"]
    return resource, meta.get("namespace", ""), meta["name"]


class Store:
    """Thread-safe; `watch` generators hold no lock between events."""

    def __init__(self, history: int = 4096) -> None:
        self._cond = threading.Condition()
        self._rv = 0
        self._objects: dict[Key, Json] = {}
        self._events: deque[Event] = deque()
        self._history = history
        self._compacted = 0  # events at or below this resourceVersion are gone
        self._closed = False

    # -- reads ----------------------------------------------------------------------------
    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def get(self, resource: str, namespace: str, name: str) -> Json | None:
        with self._cond:
            obj = self._objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def must_get(self, resource: str, namespace: str, name: str) -> Json:
        obj = self.get(resource, namespace, name)
        if obj is None:
            raise not_found_error(resource, name)
        return obj

    def list(self, resource: str, namespace: str | None = None,
             match: Predicate | None = None) -> tuple[list[Json], int]:
        """Matching objects sorted by namespace and name, and the resourceVersion they are at."""
        with self._cond:
            items = [copy.deepcopy(o) for (r, ns, _), o in sorted(self._objects.items())
                     if r == resource and (namespace is None or ns == namespace) and (match is None or match(o))]
            return items, self._rv

    # -- writes ---------------------------------------------------------------------------
    def _append(self, type_: str, resource: str, old: Json | None, new: Json) -> None:
        self._events.append(Event(self._rv, type_, resource, new["metadata"].get("namespace", ""), old, new))
        while len(self._events) > self._history:
            self._compacted = self._events.popleft().rv
        self._cond.notify_all()

    def create(self, resource: str, obj: Json) -> Json:
        key = _key(resource, obj)
        with self._cond:
            if key in self._objects:
                raise already_exists(resource, key[2])
            self._rv += 1
            stored = copy.deepcopy(obj)
            stored["metadata"]["resourceVersion"] = str(self._rv)
            self._objects[key] = stored
            self._append("ADDED", resource, None, copy.deepcopy(stored))
            return copy.deepcopy(stored)

    def update(self, resource: str, namespace: str, name: str, change: Callable[[Json], Json | None], *,
               expect_rv: str | None = None, expect_uid: str | None = None) -> Json:
        """Apply `change` to a copy of the object atomically; it returns the new object, or None
        for no change (no new resourceVersion, no event). `expect_rv` gives optimistic locking."""
        key = (resource, namespace, name)
        with self._cond:
            current = self._objects.get(key)
            if current is None or (expect_uid and current["metadata"].get("uid") != expect_uid):
                raise not_found_error(resource, name)
            if expect_rv and expect_rv != current["metadata"]["resourceVersion"]:
                raise conflict(resource, name)
            new = change(copy.deepcopy(current))
            if new is None or new == current:
                return copy.deepcopy(current)
            self._rv += 1
            new["metadata"]["resourceVersion"] = str(self._rv)
            self._objects[key] = new
            self._append("MODIFIED", resource, copy.deepcopy(current), copy.deepcopy(new))
            return copy.deepcopy(new)

    def remove(self, resource: str, namespace: str, name: str, expect_uid: str | None = None) -> Json:
        key = (resource, namespace, name)
        with self._cond:
            current = self._objects.get(key)
            if current is None or (expect_uid and current["metadata"].get("uid") != expect_uid):
                raise not_found_error(resource, name)
            del self._objects[key]
            self._rv += 1
            last = copy.deepcopy(current)
            last["metadata"]["resourceVersion"] = str(self._rv)
            self._append("DELETED", resource, current, copy.deepcopy(last))
            return last

    def compact(self) -> int:
        """Forget the event history up to now, as etcd compaction does; returns the compacted version."""
        with self._cond:
            self._events.clear()
            self._compacted = self._rv
            return self._rv

    def close(self) -> None:
        """Wake and end every watch."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- watching -------------------------------------------------------------------------
    def wait(self, after_rv: int, timeout: float) -> int:
        """Block until the resourceVersion passes `after_rv` (or timeout); returns the current one."""
        with self._cond:
            self._cond.wait_for(lambda: self._rv > after_rv or self._closed, timeout)
            return self._rv

    def watch(self, resource: str, namespace: str | None, match: Predicate, *, since: int | None,
              deadline: float, tick: float = 0.5) -> Iterator[tuple[str, Json] | None]:
        """(type, object) for each change seen through `match`, None on idle ticks.

        Without `since`, first an ADDED for every current object (the "most recent" semantics of
        resourceVersion "" and "0"), then ("SYNCED", {}) to mark the end of that list. An object
        that starts or stops matching is ADDED or DELETED, as the real watch cache reports it."""
        with self._cond:
            if since is None:
                items, since = self.list(resource, namespace, match)
                initial: list[tuple[str, Json]] = [("ADDED", o) for o in items]
                initial.append(("SYNCED", {}))
            else:
                if since < self._compacted:
                    raise expired(f"too old resource version: {since} ({self._compacted})")
                initial = []
        yield from initial
        position = since
        while time.monotonic() < deadline:
            with self._cond:
                if self._closed:
                    return
                if position < self._compacted:
                    raise expired(f"too old resource version: {position} ({self._compacted})")
                pending = [e for e in self._events if e.rv > position]
                if not pending:
                    self._cond.wait(min(tick, max(0.0, deadline - time.monotonic())))
                    pending = [e for e in self._events if e.rv > position]
            if not pending:
                yield None
                continue
            for event in pending:
                position = event.rv
                if event.resource != resource or (namespace is not None and event.namespace != namespace):
                    continue
                was = event.old is not None and match(event.old)
                now = event.type != "DELETED" and match(event.new)
                if event.type == "DELETED":
                    if was:
                        yield "DELETED", copy.deepcopy(event.new)
                elif was and now:
                    yield "MODIFIED", copy.deepcopy(event.new)
                elif now:
                    yield "ADDED", copy.deepcopy(event.new)
                elif was:
                    yield "DELETED", copy.deepcopy(event.new)
