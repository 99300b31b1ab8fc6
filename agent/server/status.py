"""Which gRPC status each failure of the agent's becomes: one table, so a caller can rely on it.

The exception family (core/errors.py) knows nothing of gRPC; this maps each class to its code, the
nearest class in an exception's MRO winning. An exception of the server's own may name its status
itself (`status`, a grpc.StatusCode): the exec helper's reported failures do. Anything else is
INTERNAL: a bug of ours, reported as one and never with its details.
"""

from __future__ import annotations

import grpc

from ..core.errors import (
    CallerGone,
    InvalidArgument,
    NotFound,
    NotRunning,
    NsinspectError,
    PermissionDenied,
    ResourceExhausted,
    RuntimeUnavailable,
    Unauthenticated,
    Unconfinable,
)

STATUS: dict[type[BaseException], grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    NotRunning: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    RuntimeUnavailable: grpc.StatusCode.UNAVAILABLE,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Unconfinable: grpc.StatusCode.FAILED_PRECONDITION,
    CallerGone: grpc.StatusCode.CANCELLED,
    NsinspectError: grpc.StatusCode.UNKNOWN,
}


def status_of(err: BaseException) -> grpc.StatusCode:
    """The status `err` is answered with."""
    own = getattr(err, "status", None)
    if isinstance(own, grpc.StatusCode):
        return own
    for cls in type(err).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL
