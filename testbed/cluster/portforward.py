"""`pods/portforward` over the v4.channel.k8s.io WebSocket protocol, as the kubelet serves it.

For the i-th requested port, channel 2i carries data and 2i+1 errors; each channel first sends the
port as 2 little-endian bytes. Each port is connected when the session opens: to the address a
test mapped for that pod, else to 127.0.0.1:PORT inside the pod's network namespace (the way
containerd's CRI port-forward does it: a thread joins the sandbox's netns only to connect).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from testbed.cluster.websocket import BINARY, WebSocket

PROTOCOL = "v4.channel.k8s.io"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Target:
    """Where one pod port goes: a host address, or 127.0.0.1:port in a process's network namespace."""

    host: str
    port: int
    netns_pid: int | None = None


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def connect(target: Target, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to `target`; the netns switch happens in a short-lived thread of its own."""
    if target.netns_pid is None:
        return socket.create_connection((target.host, target.port), timeout)
    result: dict[str, socket.socket | OSError] = {}

    def run() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            try:
                pod = os.open(f"/proc/{target.netns_pid}/ns/net", os.O_RDONLY)
                try:
                    _setns(pod)
                    try:
                        result["sock"] = socket.create_connection((target.host, target.port), timeout)
                    finally:
                        _setns(own)
                finally:
                    os.close(pod)
            finally:
                os.close(own)
        except OSError as err:
            result["err"] = err

    thread = threading.Thread(target=run, name="netns-connect")
    thread.start()
    thread.join()
    if "sock" in result:
        sock = result["sock"]
        assert isinstance(sock, socket.socket)
        sock.settimeout(None)
        return sock
    err = result.get("err")
    raise err if isinstance(err, OSError) else OSError("connect failed")


def serve(ws: WebSocket, ports: list[int], resolve: Callable[[int], Target | None], pod: str) -> None:
    """Run one port-forward session until the client closes it or every target has closed."""
    conns: dict[int, socket.socket] = {}
    for i, port in enumerate(ports):
        prefix = struct.pack("<H", port)
        ws.send(BINARY, bytes([2 * i]) + prefix)
        ws.send(BINARY, bytes([2 * i + 1]) + prefix)
    for i, port in enumerate(ports):
        target = resolve(port)
        if target is None:
            ws.send(BINARY, bytes([2 * i + 1]) + (
                f"an error occurred forwarding {port} -> {port}: error forwarding port {port} to pod {pod}: "
                "the pod has no running sandbox on a node of this cluster").encode())
            continue
        try:
            conns[i] = connect(target)
        except OSError as err:
            where = f"{target.host}:{target.port}" + (" inside the pod's network namespace" if target.netns_pid else "")
            ws.send(BINARY, bytes([2 * i + 1]) + (
                f"an error occurred forwarding {port} -> {port}: error forwarding port {port} to pod {pod}: "
                f"dial tcp4 {where}: {err.strerror or err}").encode())
    open_targets = set(conns)
    lock = threading.Lock()

    def pump(i: int, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data or not ws.send(BINARY, bytes([2 * i]) + data):
                break
        with lock:
            open_targets.discard(i)
            last = not open_targets
        if last:
            time.sleep(0.1)  # let the client drain what it got before the close frame
            ws.close()
            with contextlib.suppress(OSError):
                ws.sock.shutdown(socket.SHUT_RD)

    pumps = [threading.Thread(target=pump, args=(i, s), name=f"portforward-{ports[i]}", daemon=True)
             for i, s in conns.items()]
    for t in pumps:
        t.start()
    if not conns:
        time.sleep(0.1)
        ws.close()
    try:
        while (message := ws.recv()) is not None:
            _, data = message
            if not data:
                continue
            channel, payload = data[0], data[1:]
            index = channel // 2
            if channel % 2 == 0 and index in conns and payload:
                with contextlib.suppress(OSError):
                    conns[index].sendall(payload)
    finally:
        for sock in conns.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for t in pumps:
            t.join(5)
        for sock in conns.values():
            sock.close()
