"""A session that could not start, as an exception of the agent's: what the enterer reported back
into the core family, so the caller sees the status it always has.

The enterer reports in the agent's terms (enter/failure.py): the name of a core exception, or one of
the helper's own kinds where none fits. A core name becomes that exception (and server/status.py its
status); a helper kind becomes a HelperError carrying the status for it.
"""

from __future__ import annotations

from typing import Any

import grpc

from ..core.errors import (
    CallerGone,
    InvalidArgument,
    NotFound,
    NsinspectError,
    PermissionDenied,
    ProcessGone,
    ResourceExhausted,
    Unconfinable,
)
from ..enter.failure import INTERNAL, NO_REAPER, TIMED_OUT, TRY_AGAIN

CORE_KINDS: dict[str, type[NsinspectError]] = {cls.__name__: cls for cls in (
    ProcessGone, NotFound, InvalidArgument, PermissionDenied, ResourceExhausted, Unconfinable, CallerGone)}
HELPER_STATUS = {
    INTERNAL: grpc.StatusCode.INTERNAL,
    TRY_AGAIN: grpc.StatusCode.UNAVAILABLE,
    NO_REAPER: grpc.StatusCode.FAILED_PRECONDITION,
    TIMED_OUT: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class HelperError(NsinspectError):
    """A failure the helper reported that no core exception names, with the status code for it."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = HELPER_STATUS.get(kind, grpc.StatusCode.INTERNAL)


def session_failure(error: dict[str, Any]) -> NsinspectError:
    """The exception for a session's reported error (Session.error)."""
    kind, message = str(error.get("kind")), str(error.get("message"))
    core = CORE_KINDS.get(kind)
    return core(message) if core is not None else HelperError(kind, message)
