"""Reach an agent and turn its gRPC failures into one-line messages with exit codes."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from nsinspect.cli.errors import CliError
from nsinspect.proto import agent_pb2_grpc as pb_grpc
from nsinspect.proto.rpcerror import rpc_status


def target(address: str) -> str:
    """unix:///path, tcp://host:port or host:port, as grpc wants it."""
    if address.startswith("unix://"):
        return address
    if address.startswith("/"):
        return f"unix://{address}"
    return address.removeprefix("tcp://")


def call(args: argparse.Namespace, stub: Callable[[grpc.Channel], Any], method: str,
         build: Callable[[argparse.Namespace], Message]) -> Any:
    """One unary call to the agent that serves args' pod (directly or through Kubernetes).

    `build` makes the request once the namespace is known (the context's, when -n is not given)."""
    from nsinspect.cli.target import reach  # noqa: PLC0415

    with reach(args) as agent, grpc.insecure_channel(target(agent.address)) as channel:
        try:
            return getattr(stub(channel), method)(build(args), timeout=args.timeout)
        except grpc.RpcError as err:
            raise explain(err, args.agent or f"the agent on node {agent.node}") from None


def connect(address: str) -> tuple[grpc.Channel, pb_grpc.AgentStub]:
    channel = grpc.insecure_channel(target(address))
    return channel, pb_grpc.AgentStub(channel)


def explain(err: grpc.RpcError, address: str) -> CliError:
    code, details = rpc_status(err)
    if code == grpc.StatusCode.UNAVAILABLE and ("connect" in details.lower() or "socket" in details.lower()):
        return CliError(f"cannot reach the agent at {address}: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CliError(f"the agent at {address} did not answer in time")
    if code is None:
        return CliError(details)
    return CliError(f"{details} ({code.name})")
