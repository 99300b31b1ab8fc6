"""The agent's exception family. Each maps to one gRPC status code, so callers can rely on it."""

from __future__ import annotations


class NsinspectError(Exception):
    """Base class; `code` is the name of the grpc.StatusCode the server answers with."""

    code = "UNKNOWN"


class NotFound(NsinspectError):
    code = "NOT_FOUND"


class NotRunning(NsinspectError):
    """The pod or container exists but has no running process to look at."""

    code = "FAILED_PRECONDITION"


class InvalidArgument(NsinspectError):
    code = "INVALID_ARGUMENT"


class RuntimeUnavailable(NsinspectError):
    """The container runtime cannot be reached and no fallback could answer."""

    code = "UNAVAILABLE"


class ProcessGone(NsinspectError):
    """The process exited, or its PID now names another process, while we were reading it."""

    code = "NOT_FOUND"


class ResourceExhausted(NsinspectError):
    code = "RESOURCE_EXHAUSTED"


class PermissionDenied(NsinspectError):
    code = "PERMISSION_DENIED"


class Unauthenticated(NsinspectError):
    code = "UNAUTHENTICATED"


class Unconfinable(NsinspectError):
    """The container's confinement cannot be reproduced for an exec, and the caller may not go without it."""

    code = "FAILED_PRECONDITION"


class CallerGone(NsinspectError):
    """The caller cancelled the call or went away: nobody to answer, and not the agent's failure."""

    code = "CANCELLED"
