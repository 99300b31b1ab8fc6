"""nsinspect.v1.Agent: Inspect (one pod's namespaces, compared and verified) and NodeMap (every
namespace of this node and who holds it)."""

from __future__ import annotations

import grpc

from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc

from ..core import validate
from ..observe import nodemap
from ..observe.inspect import Inspector
from ..procfs import procns
from ..resolve.fallback import Resolver
from . import wire
from .auth.guard import Guard
from .status import answers_errors

SERVICE = pb.DESCRIPTOR.services_by_name["Agent"].full_name


class AgentService(pb_grpc.AgentServicer):
    name = SERVICE

    def __init__(self, resolver: Resolver, guard: Guard, node_name: str = "") -> None:
        self.resolver = resolver
        self.inspector = Inspector(resolver)
        self.guard = guard
        self.node_name = node_name

    def register(self, server: grpc.Server) -> None:
        pb_grpc.add_AgentServicer_to_server(self, server)

    @answers_errors
    def Inspect(self, request: pb.InspectRequest, context: grpc.ServicerContext) -> pb.InspectResponse:
        ref = validate.pod_ref(request.pod.namespace, request.pod.name, request.pod.uid)
        container = validate.container_name(request.container)
        self.guard.pod(context, "Inspect", ref)
        result = self.inspector.inspect(ref, container, wire.facts_from_pb(request.facts))
        return wire.inspection(result, self.node_name)

    @answers_errors
    def NodeMap(self, request: pb.NodeMapRequest, context: grpc.ServicerContext) -> pb.NodeMapResponse:
        types = validate.ns_types(request.types)
        self.guard.node(context, "NodeMap")
        pods, from_cri = self.resolver.list_pods()
        host = procns.read_host()
        return wire.node_map(nodemap.build_node_map(pods, host, types), host, from_cri, self.node_name)
