"""An exec session's plan: what the agent asks the enterer to do, as a value with its JSON form.

The agent builds it from a checked request (server/exec_service.py); the enterer receives it as JSON
on the session's own status socket (never through the fork server, whose memory every later
session inherits) and acts on it (enter/). PLAN_MAX bounds it, since it is one SEQPACKET message.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

PLAN_MAX = 192 << 10  # a SEQPACKET message must fit the socket's send buffer (net.core.wmem_default, 208 KiB)
FD_NAMES = ("stdin", "stdout", "stderr", "status")  # the fds a session hands its enterer, in order


@dataclass(frozen=True)
class Plan:
    """One session's request, as JSON on the wire to the helper."""

    pid: int
    start_time: int
    argv: tuple[str, ...]
    namespaces: tuple[str, ...] = ()  # empty: all the target has (nsenter -a)
    tty: bool = False
    tools: bool = False
    toolbox: str = ""
    user: int | None = None
    group: int | None = None
    privileged: bool = False
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    root: str = ""
    join: str = "auto"  # "pidfd", "fds" (the pre-5.8 way) or "auto"
    # "strict": the container's confinement (cgroups, seccomp, LSM label, oom_score_adj, rlimits) or
    # no session; "best": what can be reproduced (the caller may have nsenter semantics); "none": nsenter's
    confine: str = "strict"
    # the container's environment from its OCI spec, as CRI exec takes it; None: unknown here (no
    # runtime records), then the target's own (/proc/PID/environ), which the container may have changed
    base_env: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Plan:
        base = raw.get("base_env")
        return cls(**{**raw, "argv": tuple(raw["argv"]), "namespaces": tuple(raw["namespaces"]),
                      "env": tuple((k, v) for k, v in raw["env"]), "base_env": None if base is None else tuple(base)})
