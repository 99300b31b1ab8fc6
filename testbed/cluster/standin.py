"""The whole stand-in cluster: API server, store, auth tables, nodes, and one kubelet per node on
the lab's containerd. `with Cluster(lab_cfg) as cluster:` starts it on a free port of 127.0.0.1
and, on exit, stops the server and has every kubelet remove the pods it created from the lab.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from testbed.cluster import tls
from testbed.cluster.apiserver import ApiServer
from testbed.cluster.auth import ADMIN, Authority, User, default_authority
from testbed.cluster.kubelet import Kubelet, KubeletOptions
from testbed.cluster.portforward import Target
from testbed.cluster.registry import UNMANAGED, Behaviours, PodRegistry, now
from testbed.cluster.store import Store
from testbed.lab.config import LabConfig

Json = dict[str, Any]
AGENT_NAMESPACE = "nsinspect-system"
AGENT_LABEL = ("app.kubernetes.io/name", "nsinspect-agent")
AGENT_PORT = 7443


@dataclass(frozen=True)
class NodeSpec:
    name: str
    ip: str


DEFAULT_NODES = (NodeSpec("lab-node", "127.0.0.1"),)
TWO_NODES = (NodeSpec("lab-node", "127.0.0.1"), NodeSpec("lab-node-2", "127.0.0.2"))


def node_object(spec: NodeSpec, runtime_version: str) -> Json:
    machine = hashlib.md5(spec.name.encode()).hexdigest()  # an id, not security
    return {
        "kind": "Node", "apiVersion": "v1",
        "metadata": {"name": spec.name, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"node/{spec.name}")),
                     "creationTimestamp": now(),
                     "labels": {"kubernetes.io/hostname": spec.name, "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                                "beta.kubernetes.io/arch": "amd64"},
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"podCIDR": "127.100.0.0/16", "podCIDRs": ["127.100.0.0/16"]},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": now(),
                            "lastTransitionTime": now(), "reason": "KubeletReady",
                            "message": "kubelet is posting ready status"}],
            "addresses": [{"type": "InternalIP", "address": spec.ip}, {"type": "Hostname", "address": spec.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": machine, "systemUUID": machine, "bootID": machine, "kernelVersion": "6",
                         "osImage": "Debian GNU/Linux 12 (bookworm)", "containerRuntimeVersion": runtime_version,
                         "kubeletVersion": "v1.32.0", "kubeProxyVersion": "v1.32.0", "operatingSystem": "linux",
                         "architecture": "amd64"},
        },
    }


class Cluster:
    """A running stand-in. Without `lab_cfg` there is no kubelet: pods are stored and bound but
    stay Pending, which is all the API-only tests need (no root, no containerd)."""

    def __init__(self, lab_cfg: LabConfig | None = None, nodes: tuple[NodeSpec, ...] = DEFAULT_NODES,
                 kubelet_options: KubeletOptions | dict[str, KubeletOptions] | None = None) -> None:
        self.store = Store()
        self.authority: Authority = default_authority()
        self.behaviours = Behaviours(default_node=nodes[0].name if nodes else None)
        self.nodes = nodes
        self.lab_cfg = lab_cfg
        self.kubelets: dict[str, Kubelet] = {}
        self._options = kubelet_options
        self._ports: dict[tuple[str, str, int], Target] = {}
        self._lock = threading.Lock()
        self.registry = PodRegistry(self.store, self.behaviours, lambda node: node in self.kubelets)
        self.server = ApiServer(self.store, self.authority, self.registry, self._resolve_port)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> Cluster:
        runtime = "containerd://stand-in"
        if self.lab_cfg is not None:
            from nsinspect.agent.resolve.cri import CriClient  # noqa: PLC0415 - grpc only when a lab is used

            with CriClient(self.lab_cfg.endpoint) as client:
                version = client.version()
            runtime = f"{version.runtime_name}://{version.runtime_version}"
        for namespace in ("default", "kube-system", "kube-public", "kube-node-lease", AGENT_NAMESPACE):
            self.registry.ensure_namespace(namespace)
        for spec in self.nodes:
            self.store.create("nodes", node_object(spec, runtime))
            if self.lab_cfg is not None:
                options = self._options.get(spec.name) if isinstance(self._options, dict) else self._options
                self.kubelets[spec.name] = Kubelet(spec.name, self.store, self.lab_cfg, spec.ip, options)
        self.server.start()
        for kubelet in self.kubelets.values():
            kubelet.start()
        return self

    def stop(self) -> None:
        """Stop serving, then let each kubelet remove every sandbox it created."""
        self.server.stop()
        for kubelet in self.kubelets.values():
            kubelet.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object | type[BaseException] | TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    # -- clients ----------------------------------------------------------------------------
    def token(self, user: User = ADMIN) -> str:
        return next(t.value for t in self.authority.tokens.values() if t.user == user)

    def kubeconfig(self, path: Path, token: str = "admin-token", namespace: str = "default") -> Path:
        """A kubeconfig file for kubectl, the Python client and our CLI: one cluster, user, context."""
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "standin", "cluster": {
                "server": self.url,
                "certificate-authority-data": base64.b64encode(tls.credentials().ca.read_bytes()).decode()}}],
            "users": [{"name": "standin-user", "user": {"token": token}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin-user",
                                                         "namespace": namespace}}],
            "current-context": "standin",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # -- port-forward targets ---------------------------------------------------------------
    def map_port(self, namespace: str, pod: str, port: int, target: Target) -> None:
        """Send port-forwards to `pod`:`port` to `target` (e.g. a locally started agent)."""
        with self._lock:
            self._ports[(namespace, pod, port)] = target

    def _resolve_port(self, pod: Json, port: int) -> Target | None:
        meta = pod["metadata"]
        with self._lock:
            mapped = self._ports.get((meta["namespace"], meta["name"], port))
        if mapped is not None:
            return mapped
        kubelet = self.kubelets.get(pod["spec"].get("nodeName") or "")
        sandbox = kubelet.sandbox(meta["uid"]) if kubelet else None
        if sandbox is None:
            return None
        if pod["spec"].get("hostNetwork"):
            return Target("127.0.0.1", port)
        return Target("127.0.0.1", port, netns_pid=sandbox.sandbox_pid)

    # -- the agent DaemonSet ----------------------------------------------------------------
    def register_agent(self, node: str, host: str, port: int, agent_port: int = AGENT_PORT) -> Json:
        """A pod of the `nsinspect-agent` DaemonSet on `node`, Running and Ready, whose port
        `agent_port` port-forwards to host:port, where a test runs the real agent."""
        suffix = hashlib.sha256(node.encode()).hexdigest()[:5]
        name = f"nsinspect-agent-{suffix}"
        node_ip = next((n.ip for n in self.nodes if n.name == node), "127.0.0.1")
        self.registry.create(AGENT_NAMESPACE, {
            "metadata": {
                "name": name, "labels": {AGENT_LABEL[0]: AGENT_LABEL[1], "controller-revision-hash": "6d4b8f7c9",
                                         "pod-template-generation": "1"},
                "annotations": {UNMANAGED: "true"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "nsinspect-agent",
                                     "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, "ds/nsinspect-agent")),
                                     "controller": True, "blockOwnerDeletion": True}]},
            "spec": {"nodeName": node, "hostPID": True, "serviceAccountName": "nsinspect-agent",
                     "containers": [{"name": "agent", "image": "nsinspect.local/agent:dev",
                                     "ports": [{"name": "grpc", "containerPort": agent_port, "protocol": "TCP"}],
                                     "securityContext": {"privileged": True}}]},
        })
        started = now()
        ready = {"lastProbeTime": None, "lastTransitionTime": started, "status": "True"}

        def running(cur: Json) -> Json:
            cur["status"] = {
                "phase": "Running", "hostIP": node_ip, "hostIPs": [{"ip": node_ip}], "podIP": node_ip,
                "podIPs": [{"ip": node_ip}], "startTime": started, "qosClass": "BestEffort",
                "conditions": [{**ready, "type": t} for t in ("PodReadyToStartContainers", "Initialized", "Ready",
                                                                "ContainersReady", "PodScheduled")],
                "containerStatuses": [{"name": "agent", "image": "nsinspect.local/agent:dev", "imageID": "",
                                       "ready": True, "restartCount": 0, "started": True,
                                       "state": {"running": {"startedAt": started}}, "lastState": {}}]}
            return cur

        self.map_port(AGENT_NAMESPACE, name, agent_port, Target(host, port))
        return self.store.update("pods", AGENT_NAMESPACE, name, running)
