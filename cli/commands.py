"""The commands behind `nsinspect ns` and `nsinspect nsmap` (direct connection to an agent)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import grpc

from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc

from . import facts, render
from .agentclient import call, connect, credentials, explain
from .errors import EXIT_MISMATCH, EXIT_OK, EXIT_UNKNOWN, CliError


def _agent_address(args: argparse.Namespace) -> str:
    if not args.agent:
        raise CliError("no agent address: pass --agent ADDR or set NSINSPECT_AGENT")
    return str(args.agent)


def _emit(msg: pb.InspectResponse | pb.NodeMapResponse, text: str, args: argparse.Namespace) -> None:
    sys.stdout.write(render.machine(msg, args.output) if args.output in ("json", "yaml") else text)


def run_ns(args: argparse.Namespace) -> int:
    if args.selector:
        from . import fanout  # noqa: PLC0415 - it needs the kubernetes client, slow to import

        def ask(channel: grpc.Channel, pod: Any) -> pb.InspectResponse:
            request = pb.InspectRequest(pod=pb.PodRef(namespace=pod.metadata.namespace, name=pod.metadata.name),
                                        container=args.container, facts=facts.with_targets(facts.from_pod(pod),
                                                                                           args.target))
            return pb_grpc.AgentStub(channel).Inspect(request, timeout=args.timeout)

        outcomes = fanout.over_pods(args, ask)
        code = fanout.emit(outcomes, args, lambda r: render.inspection(r, wide=args.output == "wide"))
        return code or max((verdict_exit(o.response.verdict) for o in outcomes  # type: ignore[attr-defined]
                            if o.response is not None), default=EXIT_OK)

    def request(args: argparse.Namespace) -> pb.InspectRequest:
        spec = facts.from_pod(args.pod_object) if args.pod_object is not None else pb.PodFacts()
        return pb.InspectRequest(pod=pb.PodRef(namespace=args.namespace, name=args.pod, uid=args.uid),
                                 container=args.container, facts=facts.with_targets(spec, args.target))

    resp = call(args, pb_grpc.AgentStub, "Inspect", request)
    _emit(resp, render.inspection(resp, wide=args.output == "wide", narrowed=bool(args.container)), args)
    return verdict_exit(resp.verdict)


def verdict_exit(verdict: int) -> int:
    if verdict == pb.VERDICT_MISMATCH:
        return EXIT_MISMATCH
    return EXIT_UNKNOWN if verdict == pb.VERDICT_UNKNOWN else EXIT_OK


def run_nsmap(args: argparse.Namespace) -> int:
    if not args.agent:
        if not (args.node or args.all_nodes):
            raise CliError("nsmap needs --agent ADDR, --node NODE or --all-nodes", exit_code=2)
        from . import fanout  # noqa: PLC0415 - it needs the kubernetes client, slow to import

        def ask(channel: grpc.Channel, _: Any) -> pb.NodeMapResponse:
            return pb_grpc.AgentStub(channel).NodeMap(pb.NodeMapRequest(types=args.type), timeout=args.timeout)

        outcomes = fanout.over_nodes(args, ask)
        return fanout.emit(outcomes, args, lambda r: render.node_map(r, wide=args.output == "wide"))
    address = _agent_address(args)
    channel, stub = connect(address, credentials(args))
    with channel:
        try:
            resp = stub.NodeMap(pb.NodeMapRequest(types=args.type), timeout=args.timeout)
        except grpc.RpcError as err:
            raise explain(err, address) from None
    _emit(resp, render.node_map(resp, wide=args.output == "wide"), args)
    return EXIT_OK
