"""The commands behind `nsinspect ns` and `nsinspect nsmap` (direct connection to an agent)."""

from __future__ import annotations

import argparse
import sys

import grpc

from nsinspect.cli import render
from nsinspect.cli.agentclient import connect, explain
from nsinspect.cli.errors import EXIT_MISMATCH, EXIT_OK, EXIT_UNKNOWN, CliError
from nsinspect.proto import agent_pb2 as pb


def _agent_address(args: argparse.Namespace) -> str:
    if not args.agent:
        raise CliError("no agent address: pass --agent ADDR or set NSINSPECT_AGENT")
    return str(args.agent)


def _emit(msg: pb.InspectResponse | pb.NodeMapResponse, text: str, args: argparse.Namespace) -> None:
    sys.stdout.write(render.machine(msg, args.output) if args.output in ("json", "yaml") else text)


def _facts(args: argparse.Namespace) -> pb.PodFacts:
    facts = pb.PodFacts()
    for pair in args.target:
        container, sep, target = pair.partition("=")
        if not (sep and container and target):
            raise CliError(f"--target wants CONTAINER=TARGET, not {pair!r}", exit_code=2)
        facts.target_container_name[container] = target
    return facts


def run_ns(args: argparse.Namespace) -> int:
    address = _agent_address(args)
    facts = _facts(args)
    channel, stub = connect(address)
    with channel:
        try:
            resp = stub.Inspect(pb.InspectRequest(pod=pb.PodRef(namespace=args.namespace, name=args.pod, uid=args.uid),
                                                  container=args.container, facts=facts), timeout=args.timeout)
        except grpc.RpcError as err:
            raise explain(err, address) from None
    _emit(resp, render.inspection(resp, wide=args.output == "wide", narrowed=bool(args.container)), args)
    if resp.verdict == pb.VERDICT_MISMATCH:
        return EXIT_MISMATCH
    return EXIT_UNKNOWN if resp.verdict == pb.VERDICT_UNKNOWN else EXIT_OK


def run_nsmap(args: argparse.Namespace) -> int:
    address = _agent_address(args)
    channel, stub = connect(address)
    with channel:
        try:
            resp = stub.NodeMap(pb.NodeMapRequest(types=args.type), timeout=args.timeout)
        except grpc.RpcError as err:
            raise explain(err, address) from None
    _emit(resp, render.node_map(resp, wide=args.output == "wide"), args)
    return EXIT_OK
