"""The gRPC face of the agent: nsinspect.v1.Agent plus standard health checking and reflection.

Every handler runs behind `_errors`, which turns the agent's exception family into precise
status codes and anything unexpected into INTERNAL, so one bad request never takes the agent down.
A caller that went away (cancelled, or its request stream broke) is no failure of the agent: its
call ends CANCELLED, logged at debug level.
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc

from ..core import validate
from ..core.errors import CallerGone, NsinspectError
from ..observe import nodemap
from ..observe.inspect import Inspector
from ..procfs import procns
from ..resolve.fallback import Resolver
from . import wire
from .auth import Guard
from .status import status_of

log = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["Agent"].full_name
R = TypeVar("R")


class Service(Protocol):
    """A gRPC service the agent serves: its full name (for health and reflection) and how to add it."""

    name: str

    def register(self, server: grpc.Server) -> None: ...


def _abort(context: grpc.ServicerContext, rpc: str, err: Exception) -> NoReturn:
    current = getattr(context, "code", lambda: None)()  # ServicerContext.code(): grpc >= 1.38, untyped
    if current not in (None, grpc.StatusCode.OK):
        raise err  # the handler already aborted with its own status: keep it
    if isinstance(err, CallerGone) or not context.is_active():  # nobody to answer
        log.debug("the caller went away", extra={"rpc": rpc, "error": str(err) or type(err).__name__})
        context.abort(grpc.StatusCode.CANCELLED, "the caller went away")
    if isinstance(err, NsinspectError):
        log.info("request refused", extra={"rpc": rpc, "code": status_of(err).name, "error": str(err)})
        context.abort(status_of(err), str(err))
    log.error("request failed", extra={"rpc": rpc}, exc_info=err)
    context.abort(grpc.StatusCode.INTERNAL, "internal error in the agent (details are in its log)")
    raise AssertionError("unreachable: context.abort raises")


def _errors(method: Callable[..., R]) -> Callable[..., R]:
    """Turn the exception family into precise status codes, for unary and streaming handlers alike."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except Exception as err:
                _abort(context, method.__name__, err)

        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> R:
        try:
            return method(self, request, context)
        except Exception as err:
            _abort(context, method.__name__, err)

    return unary


class AgentService(pb_grpc.AgentServicer):
    name = SERVICE

    def __init__(self, resolver: Resolver, guard: Guard, node_name: str = "") -> None:
        self.resolver = resolver
        self.inspector = Inspector(resolver)
        self.guard = guard
        self.node_name = node_name

    def register(self, server: grpc.Server) -> None:
        pb_grpc.add_AgentServicer_to_server(self, server)

    @_errors
    def Inspect(self, request: pb.InspectRequest, context: grpc.ServicerContext) -> pb.InspectResponse:
        ref = validate.pod_ref(request.pod.namespace, request.pod.name, request.pod.uid)
        container = validate.container_name(request.container)
        self.guard.pod(context, "Inspect", ref)
        result = self.inspector.inspect(ref, container, wire.facts_from_pb(request.facts))
        return wire.inspection(result, self.node_name)

    @_errors
    def NodeMap(self, request: pb.NodeMapRequest, context: grpc.ServicerContext) -> pb.NodeMapResponse:
        types = validate.ns_types(request.types)
        self.guard.node(context, "NodeMap")
        pods, from_cri = self.resolver.list_pods()
        host = procns.read_host()
        return wire.node_map(nodemap.build_node_map(pods, host, types), host, from_cri, self.node_name)


def _bind_address(listen: str, tls: bool = False) -> str:
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
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not tls:
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
        address = _bind_address(listen, tls is not None)
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
