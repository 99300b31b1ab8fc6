"""The gRPC face of observe/processes.py and observe/network.py: nsinspect.v1.Observe (ListProcesses, NetInfo)."""

from __future__ import annotations

import grpc

from nsinspect.proto import observe_pb2 as pb
from nsinspect.proto import observe_pb2_grpc as pb_grpc

from ..core import validate
from ..core.errors import InvalidArgument
from ..observe.network import NetInspector
from ..observe.outsiders import OutsiderScan
from ..observe.pass_helper import WalkHelper
from ..observe.processes import ProcessLister
from ..resolve.fallback import Resolver
from . import wire
from .auth.guard import Guard
from .status import answers_errors

SERVICE = pb.DESCRIPTOR.services_by_name["Observe"].full_name
MAX_CPU_SAMPLE_MS = 10_000  # a request holds a worker thread for this long


class ObserveService(pb_grpc.ObserveServicer):
    name = SERVICE

    def __init__(self, resolver: Resolver, guard: Guard, node_name: str = "", cpu_sample_ms: int = 250) -> None:
        self.guard = guard
        self.lister = ProcessLister(resolver, outsiders=OutsiderScan(WalkHelper()))  # node walks off our GIL
        self.net = NetInspector(self.lister)
        self.node_name = node_name
        self.cpu_sample_ms = cpu_sample_ms

    def register(self, server: grpc.Server) -> None:
        pb_grpc.add_ObserveServicer_to_server(self, server)

    @answers_errors
    def ListProcesses(self, request: pb.ListProcessesRequest,
                      context: grpc.ServicerContext) -> pb.ListProcessesResponse:
        ref = validate.pod_ref(request.pod.namespace, request.pod.name, request.pod.uid)
        container = validate.container_name(request.container)
        sample = request.cpu_sample_ms if request.HasField("cpu_sample_ms") else self.cpu_sample_ms
        if sample > MAX_CPU_SAMPLE_MS:
            raise InvalidArgument(f"cpu_sample_ms {sample} is too long: at most {MAX_CPU_SAMPLE_MS}")
        self.guard.pod(context, "ListProcesses", ref)
        return wire.process_list(self.lister.list(ref, container, sample / 1000), self.node_name)

    @answers_errors
    def NetInfo(self, request: pb.NetInfoRequest, context: grpc.ServicerContext) -> pb.NetInfoResponse:
        ref = validate.pod_ref(request.pod.namespace, request.pod.name, request.pod.uid)
        self.guard.pod(context, "NetInfo", ref)
        return wire.net_info(self.net.net_info(ref), self.node_name)

