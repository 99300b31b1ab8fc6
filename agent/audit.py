"""The audit trail: one JSON line per call the agent admits or refuses (`"event": "call"`: caller,
RPC, target, permissions, decision and reason; see agent/auth.py), and for exec one more when a
session starts and one when it ends.

Separate from the agent's log (stderr) so it can be shipped and kept on its own: stdout by
default, or an append-only file (`--audit-log FILE`). Each line is complete on its own; the end
line repeats the start's fields, so either can be searched alone. No line ever holds a token.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from nsinspect.agent.errors import NsinspectError

log = logging.getLogger(__name__)


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
    start: str = field(default_factory=_now)
    end: str = ""
    status: str = ""  # the gRPC status the RPC ended with
    exit_code: int | None = None
    signal: int | None = None
    error: str = ""
    bytes_in: int = 0
    bytes_out: int = 0


class AuditUnavailable(NsinspectError):
    code = "UNAVAILABLE"


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
