"""Pending streams: how many calls may hold a worker while the agent waits on their callers, so
that Health/Check always finds a free one.

The sync gRPC server runs each call's handler on one of its worker threads (--max-workers) for as
long as the handler runs. A unary call holds one for as long as the agent works on it; a stream
that waits for the caller's next message holds one for as long as the caller likes. Such a
stream is *pending*: grpc reflection's ServerReflectionInfo for all its life (auth/policy.py POLICY,
Rule.pending); an Exec whose `start` has not come within GRACE (auth/guard.py waiting_on_caller),
until the guard has decided on it (once allowed, it is a session, which --max-sessions bounds). A client sends
`start` as it opens the stream, so a burst of them is not refused for the few milliseconds
each takes to read. `Pending.hold` counts a stream only while its caller has fewer than
`per_caller` pending and the agent fewer than `total`; beyond, the call is refused at once with
RESOURCE_EXHAUSTED, and audited. The caller is whom the interceptor's Authenticator identified
(no second review): one user with several tokens is one caller.

`Limits.problem` is the start-up check that makes this hold: with --max-workers at least
--max-sessions + --max-pending-streams + RESERVED_WORKERS, sessions and pending streams together
never take the workers that health checks and short calls need.
"""

from __future__ import annotations

import argparse
import threading
from collections import Counter
from dataclasses import dataclass

import grpc

from ..core.errors import ResourceExhausted
from .auth.review import Identity

RESERVED_WORKERS = 2  # never held by a session or a pending stream: Health/Check and short unary calls
GRACE = 0.02  # seconds a stream's first message may take before the stream counts as pending


@dataclass(frozen=True)
class Limits:
    total: int = 6  # pending streams in all (--max-pending-streams)
    per_caller: int = 3  # of one caller (--max-pending-per-caller)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Limits:
        return cls(args.max_pending_streams, args.max_pending_per_caller)

    def problem(self, max_workers: int, max_sessions: int) -> str:
        """Why these limits, --max-workers and --max-sessions cannot keep workers free ("" when they can)."""
        if max_sessions < 1:
            return "--max-sessions must be at least 1"
        if not 1 <= self.per_caller <= self.total:
            return (f"--max-pending-per-caller ({self.per_caller}) must be between 1 and --max-pending-streams "
                    f"({self.total})")
        needed = max_sessions + self.total + RESERVED_WORKERS
        if max_workers < needed:
            return (f"--max-workers {max_workers} is too few: each exec session (--max-sessions {max_sessions}) and "
                    f"each pending stream (--max-pending-streams {self.total}) holds a worker thread, and "
                    f"{RESERVED_WORKERS} are kept for health checks and short calls: at least {needed}")
        return ""


def add_flags(p: argparse.ArgumentParser) -> None:
    defaults = Limits()
    p.add_argument("--max-pending-streams", type=int, default=defaults.total, metavar="N",
                   help="streams the agent may wait on at once (an Exec before its `start` is authorized, reflection "
                        f"while open); more are refused with RESOURCE_EXHAUSTED (default {defaults.total})")
    p.add_argument("--max-pending-per-caller", type=int, default=defaults.per_caller, metavar="N",
                   help=f"of those, from one caller (default {defaults.per_caller})")


Key = tuple[str, str, str]  # how the caller was identified, its user name and uid


class Pending:
    """The pending streams of the agent, by call, and how many each caller has."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._calls: dict[grpc.ServicerContext, Key] = {}
        self._callers: Counter[Key] = Counter()

    def __len__(self) -> int:
        with self._lock:
            return len(self._calls)

    def hold(self, context: grpc.ServicerContext, who: Identity) -> None:
        """Count the call's stream as pending until `release` or its end; ResourceExhausted at once
        beyond the limits."""
        key = (who.via, who.user, who.uid)
        with self._lock:
            mine = self._callers[key]
            if mine >= self.limits.per_caller:
                raise ResourceExhausted(
                    f'user "{who.user}" already has {mine} pending streams (not yet authorized, or open without a '
                    f"session; at most {self.limits.per_caller}, --max-pending-per-caller): retry when one has ended")
            if len(self._calls) >= self.limits.total:
                raise ResourceExhausted(
                    f"the agent already has {len(self._calls)} pending streams (not yet authorized, or open without "
                    f"a session; at most {self.limits.total}, --max-pending-streams): retry shortly")
            self._calls[context] = key
            self._callers[key] = mine + 1
        if not context.add_callback(lambda: self.release(context)):  # the call has ended already
            self.release(context)

    def release(self, context: grpc.ServicerContext) -> None:
        """The call's stream is pending no more (authorized or refused, or ended); for any other call, nothing."""
        with self._lock:
            key = self._calls.pop(context, None)
            if key is None:
                return
            self._callers[key] -= 1
            if not self._callers[key]:
                del self._callers[key]
