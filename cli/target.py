"""How a command reaches the agent that serves the pod it names: --agent ADDR directly, or through
Kubernetes, and the one way to ask that agent a single question (`call`).

Through Kubernetes: get the pod, take its node, find the ready agent pod on that node, and
port-forward to it through the API server, so no agent port is ever exposed on the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from nsinspect.proto import agent_pb2

from .agentclient import Credentials, explain, open_channel
from .context import Context
from .errors import CliError


@dataclass(frozen=True)
class Reached:
    address: str  # what agentclient.open_channel takes
    credentials: Credentials  # what to show the agent (Context.credentials)
    ref: agent_pb2.PodRef  # the pod as the agent is asked about it (namespace: -n, else the context's)
    pod: Any | None = None  # the V1Pod, when found through Kubernetes (its spec gives the facts to verify)
    node: str = ""

    @property
    def where(self) -> str:
        """The agent, as messages name it."""
        return f"the agent on node {self.node}" if self.node else self.address


@contextmanager
def reach(ctx: Context) -> Iterator[Reached]:
    """Yields the address of the agent that serves ctx.pod, the credentials to show it, and the pod."""
    if ctx.agent:
        yield Reached(ctx.agent, ctx.credentials(), agent_pb2.PodRef(namespace=ctx.namespace(), name=ctx.pod,
                                                                     uid=ctx.uid))
        return
    from . import kube, portforward  # noqa: PLC0415 - the kubernetes client is slow to import

    k = ctx.kube()
    creds = ctx.credentials()  # before anything is asked: no token is an error that says what to do
    namespace = ctx.namespace()
    if not ctx.pod:
        raise CliError("through Kubernetes a pod is found by name: give POD (or use --agent with --uid)")
    pod = kube.get_pod(k, namespace, ctx.pod)
    node = pod.spec.node_name
    if not node:
        raise CliError(f'pod "{ctx.pod}" is not scheduled to a node yet')
    agent = kube.find_agent(k, node, ctx.agent_namespace)
    with portforward.Forwarder(k, agent.metadata.namespace, agent.metadata.name, kube.agent_port(agent)) as address:
        yield Reached(address, creds, agent_pb2.PodRef(namespace=namespace, name=ctx.pod, uid=ctx.uid), pod, node)


def call(ctx: Context, stub: Callable[[grpc.Channel], Any], method: str, build: Callable[[Reached], Message]) -> Any:
    """One unary call to the agent that serves ctx.pod (directly or through Kubernetes).

    `build` makes the request from what reach found (the pod's namespace, its spec)."""
    with reach(ctx) as agent, open_channel(agent.address, agent.credentials) as channel:
        try:
            return getattr(stub(channel), method)(build(agent), timeout=ctx.timeout)
        except grpc.RpcError as err:
            raise explain(err, agent.where) from None
