"""The one wire between the agent and its helper processes: one JSON object per SEQPACKET message,
with the fds it hands over (SCM_RIGHTS), and the sender's pid as the kernel vouches for it
(SCM_CREDENTIALS, when the receiving socket has SO_PASSCRED).

SEQPACKET keeps message boundaries and carries fds and credentials with the bytes they belong to:
no framing to parse, no partial reads, and a peer that dies is an end of stream (b"") rather than a
hang. Imports only the standard library, so a helper started with `python -I -S` can load it by path.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct
from collections.abc import Sequence
from typing import Any

MSG_MAX = 1 << 16


def send_msg(sock: socket.socket, obj: dict[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(obj).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


ANCILLARY = socket.CMSG_SPACE(16 * 4) + socket.CMSG_SPACE(12)  # up to 16 fds, and a struct ucred


def recv_from(sock: socket.socket, nowait: bool = False, size: int = MSG_MAX) -> tuple[bytes, list[int], int]:
    """One message's bytes, the fds that came with it (close-on-exec) and its sender's pid as the
    kernel gives it (0 unless the socket has SO_PASSCRED); b"" at end of stream.

    Not socket.recv_fds: in Python 3.11 it drops its flags argument (so no MSG_CMSG_CLOEXEC)."""
    flags = socket.MSG_CMSG_CLOEXEC | (socket.MSG_DONTWAIT if nowait else 0)
    data, ancdata, _, _ = sock.recvmsg(size, ANCILLARY, flags)
    fds, sender = array.array("i"), 0
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
        elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= 12:
            sender = struct.unpack_from("=iII", payload)[0]
    if not data:
        for fd in fds:
            os.close(fd)
        return b"", [], sender
    return data, list(fds), sender


def recv_raw(sock: socket.socket, nowait: bool = False, size: int = MSG_MAX) -> tuple[bytes, list[int]]:
    """One message's bytes and the fds that came with it; b"" at end of stream."""
    data, fds, _ = recv_from(sock, nowait, size)
    return data, fds


def recv_msg(sock: socket.socket, nowait: bool = False, size: int = MSG_MAX) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and its fds; (None, []) at end of stream."""
    data, fds = recv_raw(sock, nowait, size)
    return (json.loads(data) if data else None), fds
