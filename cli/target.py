"""How a command reaches the agent that serves a pod: --agent ADDR directly, or through Kubernetes.

Through Kubernetes: get the pod, take its node, find the ready agent pod on that node, and
port-forward to it through the API server, so no agent port is ever exposed on the network.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .agentclient import Credentials, credentials
from .errors import CliError


@dataclass(frozen=True)
class Reached:
    address: str  # what agentclient.open_channel takes
    pod: Any | None  # the V1Pod, when found through Kubernetes (its spec gives the facts to verify)
    node: str = ""
    credentials: Credentials = field(default_factory=Credentials)  # what to show the agent (agentclient.credentials)


def agent_port(agent_pod: Any, default: int) -> int:
    """The agent container's port named "grpc", else the default."""
    for container in agent_pod.spec.containers or []:
        for port in container.ports or []:
            if port.name == "grpc":
                return int(port.container_port)
    return default


@contextmanager
def reach(args: argparse.Namespace) -> Iterator[Reached]:
    """Yields the agent's address and the credentials to show it; sets args.namespace (-n, else the
    context's namespace) and args.pod_object (the V1Pod, None with --agent) for the request builder."""
    if args.agent:
        args.namespace = args.namespace or "default"
        args.pod_object = None
        yield Reached(args.agent, None, credentials=credentials(args))
        return
    from . import kube, portforward  # noqa: PLC0415 - the kubernetes client is slow to import

    k = kube.connect(args)
    creds = credentials(args, k)  # before anything is asked: no token is an error that says what to do
    args.namespace = args.namespace or k.namespace
    if not args.pod:
        raise CliError("through Kubernetes a pod is found by name: give POD (or use --agent with --uid)")
    pod = args.pod_object = kube.get_pod(k, args.namespace, args.pod)
    node = pod.spec.node_name
    if not node:
        raise CliError(f'pod "{args.pod}" is not scheduled to a node yet')
    agent = kube.find_agent(k, node, args.agent_namespace)
    port = agent_port(agent, kube.AGENT_PORT)
    with portforward.Forwarder(k, agent.metadata.namespace, agent.metadata.name, port) as address:
        yield Reached(address, pod, node, creds)
