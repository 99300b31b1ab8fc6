"""The server side of RFC 6455 WebSockets, just what the Kubernetes channel protocols need:
the opening handshake, masked client frames in (fragmented or not), unmasked frames out,
ping/pong and the closing handshake.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import threading
from typing import Protocol

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class Reader(Protocol):
    def read(self, n: int, /) -> bytes | None: ...


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1((key.strip() + GUID).encode()).digest()).decode()


def choose_protocol(offered: str, supported: tuple[str, ...]) -> str | None:
    """The first protocol we support in the server's order of preference, or None."""
    client = [p.strip() for p in offered.split(",") if p.strip()]
    return next((p for p in supported if p in client), None)


class WebSocket:
    """One upgraded connection. `recv` is for one reader thread; `send` is safe from any thread."""

    def __init__(self, sock: socket.socket, reader: Reader) -> None:
        self.sock = sock
        self.reader = reader
        self._send_lock = threading.Lock()
        self.closed = False

    def _read(self, n: int) -> bytes:
        data = self.reader.read(n)
        if data is None or len(data) < n:
            raise EOFError("connection closed mid-frame")
        return data

    def _frame(self) -> tuple[bool, int, bytes]:
        b1, b2 = self._read(2)
        fin, opcode, masked, length = bool(b1 & 0x80), b1 & 0x0F, bool(b2 & 0x80), b2 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        mask = self._read(4) if masked else b""
        payload = self._read(length) if length else b""
        if masked:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return fin, opcode, payload

    def recv(self) -> tuple[int, bytes] | None:
        """The next whole data message as (opcode, payload); None once the peer closed."""
        message, first = b"", None
        while True:
            try:
                fin, opcode, payload = self._frame()
            except (EOFError, OSError, ValueError):
                self.closed = True
                return None
            if opcode == PING:
                self.send(PONG, payload)
                continue
            if opcode == PONG:
                continue
            if opcode == CLOSE:
                if not self.closed:
                    self.close(1000)
                self.closed = True
                return None
            if opcode != CONT:
                first = opcode
            message += payload
            if fin:
                return (first if first is not None else BINARY), message

    def send(self, opcode: int, payload: bytes) -> bool:
        """Send one unmasked frame; False if the connection is gone."""
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([n])
        elif n < 1 << 16:
            header += bytes([126]) + struct.pack("!H", n)
        else:
            header += bytes([127]) + struct.pack("!Q", n)
        with self._send_lock:
            try:
                self.sock.sendall(header + payload)
                return True
            except OSError:
                self.closed = True
                return False

    def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.send(CLOSE, struct.pack("!H", code) + reason.encode())
        self.closed = True
