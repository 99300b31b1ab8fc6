"""The agent's gRPC server: its services (each a `Service`), standard health checking and
reflection for every one of them, and the listeners it binds (unix sockets 0600, TCP on loopback
unless TLS). The services themselves are composed in agent/main.py.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection


class Service(Protocol):
    """A gRPC service the agent serves: its full name (for health and reflection) and how to add it."""

    name: str

    def register(self, server: grpc.Server) -> None: ...


def is_loopback(host: str) -> bool:
    """`host` (a name or an address, IPv6 without brackets) is this machine's loopback."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_address(listen: str, tls: bool = False) -> str:
    """`unix:///path` or `tcp://host:port` (or plain host:port) as grpc wants it.

    Without TLS, TCP is loopback only: the agent is root on the node, and bearer tokens must not
    cross the network in clear text (in a cluster, users reach it through the API server's
    port-forward). With TLS (mTLS: every TCP caller has a client certificate) any address will do.
    """
    if listen.startswith("unix://"):
        path = Path(listen.removeprefix("unix://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # a stale socket from a previous run
        return f"unix:{path}"
    address = listen.removeprefix("tcp://")
    if not is_loopback(address.rsplit(":", 1)[0].strip("[]")) and not tls:
        raise ValueError(f"refusing to listen on {listen}: TCP is allowed on loopback addresses only "
                         "(unless the agent serves TLS: --tls-cert, --tls-key, --tls-client-ca)")
    return address


def build_server(services: Sequence[Service], listens: Sequence[str], max_workers: int = 16,
                 max_concurrent_rpcs: int = 256, *, interceptors: Sequence[grpc.ServerInterceptor] = (),
                 tls: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, list[str]]:
    """A ready (not yet started) server and the addresses it bound, with TCP ports resolved.

    Calls beyond `max_concurrent_rpcs` are refused with RESOURCE_EXHAUSTED instead of queueing.
    With `tls`, TCP listeners serve it (unix sockets never do: their callers are root).
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
                         options=[("grpc.so_reuseport", 0)], maximum_concurrent_rpcs=max_concurrent_rpcs,
                         interceptors=list(interceptors))
    for service in services:
        service.register(server)
    names = [s.name for s in services]
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    bound = []
    for listen in listens:
        address = bind_address(listen, tls is not None)
        if address.startswith("unix:"):
            mask = os.umask(0o177)  # 0600 from the start: whoever connects here is taken for root
            try:
                server.add_insecure_port(address)
            finally:
                os.umask(mask)
            Path(address.removeprefix("unix:")).chmod(0o600)
            bound.append(f"unix://{address.removeprefix('unix:')}")
        else:
            port = server.add_secure_port(address, tls) if tls is not None else server.add_insecure_port(address)
            bound.append(f"{'tls' if tls is not None else 'tcp'}://{address.rsplit(':', 1)[0]}:{port}")
    return server, bound
