"""The audit trail: one JSON line per call the agent admits or refuses (`"event": "call"`: caller,
RPC, target, permissions, decision and reason; see agent/server/auth/guard.py), and for exec one more when a
session starts and one when it ends, with everything the command was started with (argv, the
environment overrides, credentials, paths).

Separate from the agent's log (stderr) so it can be shipped and kept on its own: stdout by
default, or an append-only file (`--audit-log FILE`). Each line is complete on its own; the end
line repeats the start's fields, so either can be searched alone. No line ever holds a token:
environment values whose names look secret are masked (names never), as are passwords in URLs.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import grpc

from ..core.errors import NsinspectError

log = logging.getLogger(__name__)
MASKED = "[masked]"
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASS|_PWD|KEY|CREDENTIAL|AUTH|CERT|PRIVATE|COOKIE", re.IGNORECASE)
URL_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^/@\s]*@")  # scheme://user:PASSWORD@host


def environment(env: Mapping[str, str]) -> dict[str, str]:
    """Environment overrides as the audit shows them: every name; the value masked where the name
    looks secret (API_TOKEN, DB_PASSWORD, AWS_SECRET_ACCESS_KEY, ...), else any password in a URL."""
    return {name: MASKED if SECRET_NAME.search(name) else URL_PASSWORD.sub(rf"\1{MASKED}@", value)
            for name, value in sorted(env.items())}


def target(pod: Any) -> dict[str, str]:
    """How audit lines name a pod (a PodRef or PodInfo, of the model or the wire)."""
    return {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid}


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


@dataclass
class AuditRecord:
    """What is known about a session; filled in as it goes."""

    session: str
    caller: str
    pod: dict[str, str]
    container: str
    namespaces: list[str]
    argv: list[str]
    tty: bool
    stdin: bool
    tools: bool
    privileged: bool
    user: int | None = None
    group: int | None = None
    workdir: str = ""
    root: str = ""
    env: dict[str, str] = field(default_factory=dict)  # the overrides, masked (see environment)
    confined: list[str] = field(default_factory=list)  # the container's confinement the command got
    unconfined: list[str] = field(default_factory=list)  # what of it could not be reproduced, and why
    start: str = field(default_factory=_now)
    end: str = ""
    status: str = ""  # the gRPC status the RPC ended with
    exit_code: int | None = None
    signal: int | None = None
    error: str = ""
    bytes_in: int = 0
    bytes_out: int = 0


class AuditUnavailable(NsinspectError):
    """The audit line could not be written: the call is refused, never left unaudited."""

    status = grpc.StatusCode.UNAVAILABLE


class AuditLog:
    def __init__(self, path: str = "-") -> None:
        self.path = path
        self._lock = threading.Lock()
        self._out: IO[str] = sys.stdout if path == "-" else open(path, "a", encoding="utf-8")  # noqa: SIM115

    def _write(self, entry: dict[str, Any]) -> str:
        """"" once the line is written, else why not (also logged)."""
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self._lock:
            try:
                self._out.write(line)
                self._out.flush()
            except (OSError, ValueError) as err:
                log.error("cannot write the audit log", extra={"path": self.path, "error": str(err), "entry": entry})
                return str(err)
        return ""

    def call(self, entry: dict[str, Any]) -> None:
        """One call's authentication and authorization decision."""
        self._write({"time": _now(), "event": "call", **entry})

    def started(self, record: AuditRecord) -> None:
        """Raises AuditUnavailable when the line cannot be written: no session runs unaudited."""
        entry = {k: v for k, v in asdict(record).items()
                 if k not in ("end", "status", "exit_code", "signal", "error", "bytes_in", "bytes_out")}
        why = self._write({"time": record.start, "event": "exec.start", **entry})
        if why:
            raise AuditUnavailable(f"the session was refused: the agent cannot write its audit log ({why})")

    def ended(self, record: AuditRecord) -> None:
        record.end = _now()
        self._write({"time": record.end, "event": "exec.end", **asdict(record)})

    def close(self) -> None:
        if self._out is not sys.stdout:
            self._out.close()
