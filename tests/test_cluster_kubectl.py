"""Fidelity check: the real kubectl (v1.32) works against the stand-in as against a cluster:
`get pods`, `get pod -o yaml` and `debug --target --attach=false`, and it reads the stand-in's
error bodies the way it reads the real ones."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as typed_client

from testbed.cluster.standin import Cluster
from testbed.lab.pods import Lab
from tests.conftest import require
from tests.nsread import ns_ids

# The generated models make every field Optional; tests read them as the plain values they are.
client: Any = typed_client

pytestmark = pytest.mark.lab
NS = "kubectl-test"


@pytest.fixture
def kubectl(cluster: Cluster, tmp_path: Path) -> Any:
    exe = shutil.which("kubectl")
    require(exe is not None, "kubectl is not installed")
    config = cluster.kubeconfig(tmp_path / "kubeconfig", namespace=NS)

    def run(*args: str, token: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        path = cluster.kubeconfig(tmp_path / f"{token}.kubeconfig", token, NS) if token else config
        result = subprocess.run([str(exe), "--kubeconfig", str(path), *args], capture_output=True, text=True,
                                timeout=60)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    return run


def _web(api: Any) -> Any:
    api.create_namespaced_pod(NS, {"metadata": {"name": "web"}, "spec": {"containers": [
        {"name": "app", "image": "busybox", "command": ["sleep", "3600"]}]}})
    deadline = time.monotonic() + 60
    while (p := api.read_namespaced_pod("web", NS)).status.phase != "Running":
        assert time.monotonic() < deadline, p.status
        time.sleep(0.1)
    return p


def _ephemeral(api: Any, name: str, state: str) -> Any:
    deadline = time.monotonic() + 60
    while True:
        statuses = {s.name: s for s in api.read_namespaced_pod("web", NS).status.ephemeral_container_statuses or []}
        if name in statuses and getattr(statuses[name].state, state):
            return statuses[name]
        assert time.monotonic() < deadline, statuses
        time.sleep(0.1)


def test_get_pods_and_yaml(cluster: Cluster, kubectl: Any, k8s: Any, lab: Lab) -> None:
    web = _web(client.CoreV1Api(k8s))
    lines = kubectl("get", "pods").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert lines[1].split()[:4] == ["web", "1/1", "Running", "0"]
    wide = kubectl("get", "pods", "-o", "wide").stdout.splitlines()[1].split()
    assert wide[5:7] == [web.status.pod_ip, "lab-node"]
    as_yaml = yaml.safe_load(kubectl("get", "pod", "web", "-o", "yaml").stdout)
    assert as_yaml["metadata"]["uid"] == web.metadata.uid
    container_id = as_yaml["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://")
    assert [c.id for c in lab.cri.list_containers({"io.kubernetes.pod.uid": web.metadata.uid})] == [container_id]
    assert kubectl("get", "nodes").stdout.splitlines()[1].split()[:2] == ["lab-node", "Ready"]


def test_debug_adds_an_ephemeral_container(cluster: Cluster, kubectl: Any, k8s: Any, lab: Lab) -> None:
    api = client.CoreV1Api(k8s)
    web = _web(api)
    out = kubectl("debug", "web", "--image=busybox", "--target=app", "--attach=false")
    assert 'Targeting container "app"' in out.stdout
    [added] = api.read_namespaced_pod("web", NS).spec.ephemeral_containers
    assert added.name.startswith("debugger-") and added.target_container_name == "app"
    patch = [entry for entry in cluster.server.log if entry.method == "PATCH"]
    assert patch[-1].content_type == "application/strategic-merge-patch+json" and patch[-1].code == 200
    # busybox's default command is a shell with no stdin: it ends at once, as on a real node
    done = _ephemeral(api, added.name, "terminated")
    assert done.state.terminated.exit_code == 0 and done.container_id.startswith("containerd://")

    kubectl("debug", "web", "--image=busybox", "--target=app", "--attach=false", "-c", "sleeper", "--",
            "sleep", "3600")
    sleeper = _ephemeral(api, "sleeper", "running")
    app_id = web.status.container_statuses[0].container_id.removeprefix("containerd://")
    sleeper_pid = int(lab.cri.container_status(sleeper.container_id.removeprefix("containerd://"))[1]["pid"])
    app_pid = int(lab.cri.container_status(app_id)[1]["pid"])
    assert ns_ids(sleeper_pid)["pid"] == ns_ids(app_pid)["pid"]


def test_kubectl_reads_the_error_bodies(cluster: Cluster, kubectl: Any, k8s: Any) -> None:
    _web(client.CoreV1Api(k8s))
    denied = kubectl("debug", "web", "--image=busybox", "--attach=false", token="alice-token", check=False)
    assert denied.returncode != 0
    assert 'User "alice" cannot patch resource "pods/ephemeralcontainers"' in denied.stderr
    missing = kubectl("debug", "nope", "--image=busybox", "--attach=false", check=False)
    assert 'pods "nope" not found' in missing.stderr
    cluster.behaviours.ephemeral_containers = False
    disabled = kubectl("debug", "web", "--image=busybox", "--attach=false", check=False)
    assert "ephemeral containers are disabled for this cluster" in disabled.stderr
