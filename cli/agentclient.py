"""Reach an agent and turn its gRPC failures into one-line messages with exit codes."""

from __future__ import annotations

import grpc

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
