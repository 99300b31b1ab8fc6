"""The CLI's side of the Kubernetes API: kubeconfig and context, pods, their nodes, and the agents.

kubectl's conventions: --kubeconfig (else $KUBECONFIG, else ~/.kube/config), --context, and the
context's namespace as the default for -n. API failures become one-line CliErrors.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .errors import CliError

AGENT_NAMESPACE = "nsinspect-system"
AGENT_SELECTOR = "app.kubernetes.io/name=nsinspect-agent"
AGENT_PORT = 7443


@dataclass(frozen=True)
class Kube:
    api: Any  # kubernetes.client.ApiClient
    namespace: str  # the context's default namespace
    context: str

    @property
    def core(self) -> Any:
        return client.CoreV1Api(self.api)


def connect(kubeconfig: str | None, context: str | None) -> Kube:
    """A client for `context` (None: the current one) of `kubeconfig` (None: $KUBECONFIG, else
    ~/.kube/config); its namespace is the context's, else "default"."""
    try:
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = next((c for c in contexts if c["name"] == context), None) if context else current
        if context and chosen is None:
            raise CliError(f'context "{context}" not found in the kubeconfig')
        api = config.new_client_from_config(config_file=kubeconfig, context=context)
    except config.ConfigException as err:
        raise CliError(f"cannot load the kubeconfig: {err}") from None
    default_ns = (chosen or {}).get("context", {}).get("namespace") or "default"
    return Kube(api, default_ns, (chosen or {}).get("name", ""))


def user_token(kube: Kube) -> tuple[str, str]:
    """The kubeconfig user's bearer token for the agent, and when there is none, what the user has
    instead. The kubernetes client's loader has run any exec credential plugin or auth provider
    already; asking through the configuration refreshes an expired one."""
    configuration = kube.api.configuration
    value = configuration.get_api_key_with_prefix("BearerToken", alias="authorization") or ""
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), ""
    if scheme.lower() == "basic":
        return "", "it authenticates with a user name and password"
    if configuration.cert_file:
        return "", "it authenticates with a client certificate"
    return "", "it has no credentials"


def api_error(err: ApiException, what: str) -> CliError:
    """One line from the API server's Status body (its message), or its HTTP reason."""
    import json  # noqa: PLC0415

    message = ""
    with contextlib.suppress(ValueError, AttributeError):
        message = json.loads(err.body or "{}").get("message", "")
    if err.status == 401:
        return CliError(f"{what}: the API server does not accept your credentials ({message or err.reason})")
    return CliError(f"{what}: {message or err.reason} (HTTP {err.status})")


def get_pod(kube: Kube, namespace: str, name: str) -> Any:
    try:
        return kube.core.read_namespaced_pod(name, namespace)
    except ApiException as err:
        if err.status == 404:
            raise CliError(f'pod "{name}" not found in namespace "{namespace}"') from None
        raise api_error(err, f"cannot get pod {namespace}/{name}") from None


def find_agent(kube: Kube, node: str, namespace: str = AGENT_NAMESPACE, selector: str = AGENT_SELECTOR) -> Any:
    """The running, ready agent pod on `node`."""
    try:
        pods = kube.core.list_namespaced_pod(namespace, label_selector=selector,
                                             field_selector=f"spec.nodeName={node}").items
    except ApiException as err:
        raise api_error(err, f"cannot list the nsinspect agents in namespace {namespace}") from None
    if not pods:
        raise CliError(f'no nsinspect agent on node "{node}" (no pod labelled {selector} in namespace {namespace}; '
                       "is the DaemonSet installed? see deploy/daemonset.yaml)")
    ready = [p for p in pods if p.status and p.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))]
    if not ready:
        pod = pods[0]
        phase = pod.status.phase if pod.status else "Unknown"
        raise CliError(f'the nsinspect agent on node "{node}" ({namespace}/{pod.metadata.name}) is not ready '
                       f"(phase {phase})")
    return ready[0]


def agent_port(agent_pod: Any, default: int = AGENT_PORT) -> int:
    """The agent container's port named "grpc", else the default."""
    for container in agent_pod.spec.containers or []:
        for port in container.ports or []:
            if port.name == "grpc":
                return int(port.container_port)
    return default
