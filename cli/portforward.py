"""Reach a pod's port through the API server (pods/portforward), as `kubectl port-forward` does.

gRPC wants an address, so a relay listens on 127.0.0.1 on a free port and opens one port-forward
stream to the pod for every connection it accepts. Nothing is exposed beyond loopback.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from types import TracebackType
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.stream import portforward

from .errors import CliError
from .kube import Kube, api_error


def open_stream(kube: Kube, namespace: str, pod: str, port: int) -> Any:
    """One port-forward stream; a refusal (403, 404) becomes a one-line CliError."""
    try:
        return portforward(kube.core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))
    except ApiException as err:
        if err.status == 403:
            raise CliError(f"port-forward to {namespace}/{pod} is forbidden: you need get and create on "
                           f"pods/portforward in namespace {namespace}") from None
        raise api_error(err, f"cannot port-forward to {namespace}/{pod}") from None


def _pump(a: socket.socket, b: Any) -> None:
    """Copy both ways until either side closes."""
    with contextlib.suppress(OSError):
        while True:
            readable, _, _ = select.select([a, b], [], [])
            for src, dst in ((a, b), (b, a)):
                if src in readable:
                    data = src.recv(65536)
                    if not data:
                        return
                    dst.sendall(data)


class Forwarder:
    """`with Forwarder(kube, ns, pod, port) as address:` gives "127.0.0.1:PORT" for the pod's port."""

    def __init__(self, kube: Kube, namespace: str, pod: str, port: int) -> None:
        self.kube, self.namespace, self.pod, self.port = kube, namespace, pod, port
        # Open one stream up front, so refusals surface here as a clear error, not as a gRPC failure.
        self._first: Any = open_stream(kube, namespace, pod, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="port-forward", daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        host, port = self._listener.getsockname()[:2]
        return f"{host}:{port}"

    def __exit__(self, *exc: object | type[BaseException] | TracebackType | None) -> None:
        self._closed.set()
        self._listener.close()
        if self._first is not None:
            self._first.close()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            stream, self._first = self._first, None
            threading.Thread(target=self._relay, args=(conn, stream), daemon=True).start()

    def _relay(self, conn: socket.socket, stream: Any) -> None:
        try:
            if stream is None:
                stream = open_stream(self.kube, self.namespace, self.pod, self.port)
            _pump(conn, stream.socket(self.port))
        except CliError:
            pass  # the gRPC call on this connection fails and reports it
        finally:
            conn.close()
            if stream is not None:
                stream.close()
