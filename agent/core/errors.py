"""The agent's exception family, small as psutil's: one class per way a request can fail, so callers
catch what they mean. Which status code each becomes is the server's business (server/status.py)."""

from __future__ import annotations


class NsinspectError(Exception):
    """Base class of every failure the agent reports to its caller."""


class NotFound(NsinspectError):
    """No such pod, container or process."""


class NotRunning(NsinspectError):
    """The pod or container exists but has no running process to look at."""


class InvalidArgument(NsinspectError):
    """The request itself is wrong: a malformed name, an unknown type, a field out of range."""


class RuntimeUnavailable(NsinspectError):
    """The container runtime cannot be reached and no fallback could answer."""


class ProcessGone(NotFound):
    """The process exited, or its PID now names another process, while we were reading it."""


class ResourceExhausted(NsinspectError):
    """A limit of the agent's or the node's is reached: sessions, pending streams, pids."""


class PermissionDenied(NsinspectError):
    """The caller is known but may not do this, or the kernel refused it."""


class Unauthenticated(NsinspectError):
    """The caller could not be identified."""


class Unconfinable(NsinspectError):
    """The container's confinement cannot be reproduced for an exec, and the caller may not go without it."""


class CallerGone(NsinspectError):
    """The caller cancelled the call or went away: nobody to answer, and not the agent's failure."""
