"""An Exec stream's bytes: the session's output to the client, the client's input to the session.

The gRPC thread never enters a namespace; it pumps bytes between the stream and the session's pipes
(or pty) while the helper does the entering. Output is read only as fast as gRPC sends it (one
message of at most 1 MiB in flight per session, the pipe's 1 MiB behind it), so a slow client makes
the command block on write instead of growing the agent's memory; stdin is written only as fast as
the command reads it, and gRPC's flow control holds back the client. Output that follows output
closely (BULK_GAP) waits LINGER to batch up: each gRPC message costs about as much as 30 KiB of copying.
"""

from __future__ import annotations

import logging
import select
import signal
import time
from collections.abc import Generator, Iterator

import grpc

from nsinspect.proto import exec_pb2 as pb

from ..enter.session import Session

log = logging.getLogger(__name__)
SIGNALS = {pb.SIGNAL_INT: signal.SIGINT, pb.SIGNAL_TERM: signal.SIGTERM, pb.SIGNAL_KILL: signal.SIGKILL}
DRAIN_AFTER_EXIT = 1.0
BULK_GAP, LINGER = 0.002, 0.001  # output that follows output this closely waits LINGER to batch up


def pump_output(session: Session, context: grpc.ServicerContext,
                idle: float) -> Generator[pb.ExecResponse, None, pb.ExecExit | None]:
    """Output to the client until the command has exited and its output is drained; the exit to
    send, or None when the call was cancelled. `idle`: seconds without input or output that end the
    session (--idle-timeout); 0: never."""
    poller = select.poll()
    for fd in (*session.stdio.outputs, session.status.fileno(), session.wake_fd):
        poller.register(fd, select.POLLIN)
    outputs = dict(session.stdio.outputs)
    last_data: dict[int, float] = {}
    ended_by_agent = ""
    drain_until = 0.0
    while True:
        now = time.monotonic()
        if session.exit is not None or session.helper_gone:
            if not drain_until:
                session.kill()  # anything left that could hold the pipes open
                drain_until = now + DRAIN_AFTER_EXIT
            if not outputs or now >= drain_until:
                break
            timeout: float | None = drain_until - now
        elif idle and not ended_by_agent:
            timeout = max(0.0, session.stdio.last_activity + idle - now)
        else:
            timeout = None
        events = poller.poll(None if timeout is None else int(timeout * 1000) + 1)
        if not context.is_active():
            return None
        if not events and idle and not ended_by_agent and time.monotonic() - session.stdio.last_activity >= idle:
            ended_by_agent = f"no input or output for {idle:g} s: the agent ended the session (--idle-timeout)"
            session.kill()
        for fd, _ in events:
            if fd == session.wake_fd:
                return None
            if fd == session.status.fileno():
                session.read_status()
                if session.helper_gone:
                    poller.unregister(fd)
            elif fd in outputs:
                bulk = time.monotonic() - last_data.get(fd, 0.0) < BULK_GAP  # data came just now too
                data = session.stdio.read_output(fd, LINGER if bulk else 0.0)
                if data is None:
                    continue
                if not data:
                    poller.unregister(fd)
                    del outputs[fd]
                    continue
                last_data[fd] = time.monotonic()
                if outputs[fd] == "stdout":
                    yield pb.ExecResponse(stdout=data)
                else:
                    yield pb.ExecResponse(stderr=data)
    if session.exit is None:
        return pb.ExecExit(code=-1, error=ended_by_agent or "the exec helper ended without an exit status")
    code, sig = session.exit
    return pb.ExecExit(code=code, signal=sig, error=ended_by_agent or session.exec_error)


def feed_input(session: Session, requests: Iterator[pb.ExecRequest]) -> None:
    """The client's side of the stream: stdin, resizes and signals, until it closes or the call ends."""
    try:
        for req in requests:
            kind = req.WhichOneof("msg")
            if kind == "stdin":
                session.stdio.write_stdin(req.stdin)
            elif kind == "close_stdin":
                session.stdio.close_stdin()
            elif kind == "resize":
                session.stdio.resize(req.resize.rows, req.resize.cols)
            elif kind == "signal" and req.signal in SIGNALS:
                session.signal(SIGNALS[req.signal])
    except Exception as err:  # the call ended (cancelled): nothing more to read
        log.debug("exec input ended", extra={"session": session.id, "error": str(err)})
        return
    if not session.plan.tty:
        session.stdio.close_stdin()  # the client is done sending
