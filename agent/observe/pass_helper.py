"""The outsider pass in a helper process of its own, so that it runs off the agent's interpreter lock.

The pass is a Python loop over every process of the node, tens of milliseconds on a busy node, and
in the agent's interpreter it would hold the lock every request thread needs (an Inspect would wait
behind it). The helper (`python -m nsinspect.agent.observe.pass_helper FD`) is single-threaded,
started once, and ends when the agent's end of its socket closes. It speaks the helpers' one wire
(linux/helperwire.py: a JSON object per SEQPACKET message): a pass plan in, its raw hits out, each
in messages of at most ENTRIES_PER_MESSAGE entries (the last one says "more": false), so no answer
outgrows a message however many processes a pass finds.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

from ..core.nsid import NamespaceId
from ..linux.helperwire import recv_msg, send_msg
from .outsider_pass import Joined, PassPlan, Query, RawHit, hits_as_joined, plan_for, raw_pass

log = logging.getLogger(__name__)
ENTRIES_PER_MESSAGE = 1000  # 1,000 hits are about 50 kB, below helperwire.MSG_MAX


class WalkHelper:
    """The outsider pass (outsider_pass.raw_pass) in a helper process; an OutsiderScan's `walk`.
    A helper that fails is replaced on the next pass; that pass is made here meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None

    def __call__(self, queries: list[Query]) -> list[Joined]:
        plan = plan_for(queries)
        with self._lock:
            try:
                if self._proc is None or self._sock is None:
                    self._proc, self._sock = _start_helper()
                head = {"pid_links": sorted(plan.pid_links), "net_links": sorted(plan.net_links),
                        "holders": [[ns.dev, ns.ino, pid] for ns, pid in plan.holders.items()]}
                _send_chunked(self._sock, head, "skip", sorted(plan.skip))
                _, hits = _recv_chunked(self._sock, "hits")
                return hits_as_joined((int(pid), str(pid_link), str(net_link)) for pid, pid_link, net_link in hits)
            except (OSError, ValueError, TypeError, KeyError) as err:
                log.warning("the outsider pass helper failed: walking here", extra={"error": str(err)})
                self._stop()
        return hits_as_joined(raw_pass(plan))

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _start_helper() -> tuple[subprocess.Popen[bytes], socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with theirs:
        proc = subprocess.Popen([sys.executable, "-m", __name__, str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                                stdin=subprocess.DEVNULL, close_fds=True)
    return proc, ours


def _send_chunked(sock: socket.socket, head: dict[str, Any], key: str, items: list[Any]) -> None:
    """`head`, and `items` under `key` ENTRIES_PER_MESSAGE at a time; the last message has "more": false."""
    for at in range(0, max(len(items), 1), ENTRIES_PER_MESSAGE):
        rest = at + ENTRIES_PER_MESSAGE < len(items)
        send_msg(sock, {**head, key: items[at:at + ENTRIES_PER_MESSAGE], "more": rest})
        head = {}


def _recv_chunked(sock: socket.socket, key: str) -> tuple[dict[str, Any], list[Any]]:
    """The first message (its other keys) and every message's `key` items, up to "more": false."""
    first: dict[str, Any] | None = None
    items: list[Any] = []
    while True:
        msg, fds = recv_msg(sock)
        for fd in fds:
            os.close(fd)  # none are sent
        if msg is None:
            raise OSError("the outsider pass helper's peer is gone")
        first = msg if first is None else first
        items += msg[key]
        if not msg["more"]:
            return first, items


def _plans(sock: socket.socket) -> Iterator[PassPlan]:
    """The plans the agent sends, until its end of the socket closes."""
    while True:
        try:
            head, skip = _recv_chunked(sock, "skip")
        except OSError:
            return
        yield PassPlan(frozenset(head["pid_links"]), frozenset(head["net_links"]),
                       {NamespaceId("pid", dev, ino): pid for dev, ino, pid in head["holders"]}, frozenset(skip))


def serve_passes(fd: int) -> None:
    """The helper's loop: a pass plan in, the pass's raw hits out; until the agent's end closes."""
    sock = socket.socket(fileno=fd)
    for plan in _plans(sock):
        hits: list[RawHit] = raw_pass(plan)
        _send_chunked(sock, {}, "hits", [list(hit) for hit in hits])


if __name__ == "__main__":
    serve_passes(int(sys.argv[1]))
