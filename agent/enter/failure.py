"""How a session that cannot start says why: in the agent's own terms, never the wire's.

A failure reaches the agent as {"event": "error", "kind", "message", "gone", "unconfined"} on the
session's status socket. `kind` names the core exception it stands for (core/errors.py: ProcessGone,
NotFound, InvalidArgument, PermissionDenied, ResourceExhausted, Unconfinable, CallerGone) or, where none fits,
one of the helper's own kinds below; the server turns it back into an exception, and so into the
status code the caller has always seen (server/exec_failure.py). `gone`: the target process exited
(the agent resolves the container once more); `unconfined`: the container's confinement cannot be
reproduced here (a caller with nsenter semantics may go on without it).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from ..core.errors import NsinspectError

INTERNAL = "Internal"  # a failure of ours or the node's, not the request's
TRY_AGAIN = "TryAgain"  # the node is busy with the target now (a tracer holds it): the same request may work
NO_REAPER = "NoReaper"  # this agent cannot start sessions until its reaper is built
TIMED_OUT = "TimedOut"  # the helper did not answer in time
HELPER_KINDS = (INTERNAL, TRY_AGAIN, NO_REAPER, TIMED_OUT)


def error_event(kind: type[NsinspectError] | str, message: str, gone: bool = False,
            unconfined: bool = False) -> dict[str, Any]:
    """The status message that reports a failure of `kind` (a core exception class, or one of HELPER_KINDS)."""
    name = kind if isinstance(kind, str) else kind.__name__
    return {"event": "error", "kind": name, "message": message, "gone": gone, "unconfined": unconfined}


class EnterError(Exception):
    """A failure to report to the agent, of a `kind` that error_event() takes."""

    def __init__(self, kind: type[NsinspectError] | str, message: str, gone: bool = False,
                 unconfined: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.gone = gone
        self.unconfined = unconfined  # the container's confinement cannot be reproduced here

    def report(self) -> dict[str, Any]:
        return error_event(self.kind, str(self), self.gone, self.unconfined)


def internal_error(err: BaseException) -> None:
    """A bug's last word, without a traceback: printing one reads our source files by path, and after
    the chroot those paths are in the container's root, where the pod may have planted a file whose
    `coding:` line names a codec module of its own (code of the pod's, run in the node's pid
    namespace). The message alone touches no file."""
    with contextlib.suppress(Exception):
        os.write(2, f"nsinspect-enter: internal error: {type(err).__name__}: {err}\n".encode(errors="replace"))
