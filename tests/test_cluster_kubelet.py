"""The stand-in with its kubelet on the lab's containerd, driven by the official Python client:
pods become real sandboxes and containers, statuses carry the runtime's ids, ephemeral containers
get pid TARGET (checked in /proc), and a real agent is reached through port-forward."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubernetes import client as typed_client
from kubernetes import watch as typed_watch
from kubernetes.stream import portforward

from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc
from testbed.agentproc import running_agent
from testbed.cluster.kubelet import KubeletOptions
from testbed.cluster.standin import AGENT_NAMESPACE, TWO_NODES, Cluster
from testbed.lab.config import LabConfig
from testbed.lab.pods import Lab
from tests.nsread import host_pid, ns_ids

# The generated models make every field Optional; tests read them as the plain values they are.
client: Any = typed_client
watch: Any = typed_watch

pytestmark = pytest.mark.lab
NS = "standin"  # keeps these pods apart from the lab's canonical ones
Json = dict[str, Any]


def pod(name: str, *containers: Json, **spec: Any) -> Json:
    return {"metadata": {"name": name, "labels": {"test": "cluster"}},
            "spec": {"containers": list(containers) or [sleeper("app")], **spec}}


def sleeper(name: str, image: str = "busybox", **fields: Any) -> Json:
    return {"name": name, "image": image, "command": ["sleep", "3600"], **fields}


def until(api: Any, name: str, done: Callable[[Any], bool], timeout: float = 60,
          namespace: str = NS) -> tuple[Any, list[tuple[str, Any]]]:
    """Watch one pod (from its current state on) until `done(pod)`; returns it and the events seen."""
    events: list[tuple[str, Any]] = []
    stream = watch.Watch().stream(api.list_namespaced_pod, namespace, field_selector=f"metadata.name={name}",
                                  timeout_seconds=int(timeout))
    with contextlib.closing(stream):  # closes the watch's connection now, not at some later GC
        for event in stream:
            events.append((event["type"], event["object"]))
            if event["type"] != "DELETED" and done(event["object"]):
                return event["object"], events
    raise AssertionError(f"pod {name} never got there; last: {events[-1][1].status if events else None}")


def running(p: Any) -> bool:
    return p.status.phase == "Running" and all(s.state.running for s in p.status.container_statuses or [])


def ephemeral_running(name: str) -> Callable[[Any], bool]:
    return lambda p: any(s.name == name and s.state.running for s in p.status.ephemeral_container_statuses or [])


def cid(status: Any) -> str:
    assert status.container_id.startswith("containerd://")
    return str(status.container_id.removeprefix("containerd://"))


def pid_of(lab: Lab, container_id: str) -> int:
    return int(lab.cri.container_status(container_id)[1]["pid"])


@pytest.fixture
def api(k8s: Any) -> Any:
    return client.CoreV1Api(k8s)


def test_pod_lifecycle_with_an_ephemeral_container(cluster: Cluster, api: Any, lab: Lab) -> None:
    created = api.create_namespaced_pod(NS, pod("life", sleeper("app"), sleeper("sidecar", "distroless",
                                                                                command=None)))
    uid = created.metadata.uid
    live, events = until(api, "life", running)
    assert events[0][0] == "ADDED" and events[-1][0] == "MODIFIED"
    statuses = {s.name: s for s in live.status.container_statuses}
    # the ids in the pod's status are the runtime's own
    runtime = {c.metadata.name: c.id for c in lab.cri.list_containers({"io.kubernetes.pod.uid": uid})}
    assert {n: cid(s) for n, s in statuses.items()} == runtime and len(runtime) == 2
    [sandbox] = lab.cri.list_sandboxes({"io.kubernetes.pod.uid": uid})
    assert (sandbox.metadata.name, sandbox.metadata.namespace) == ("life", NS)
    assert live.status.pod_ip == lab.cri.sandbox_status(sandbox.id)[0].network.ip
    assert live.status.pod_ip.startswith("127.100.") and live.status.host_ip == "127.0.0.1"
    assert {c.type: c.status for c in live.status.conditions}["Ready"] == "True"
    assert statuses["sidecar"].image_id.startswith("sha256:") and statuses["app"].ready

    api.patch_namespaced_pod_ephemeralcontainers("life", NS, {"spec": {"ephemeralContainers": [
        sleeper("debugger", targetContainerName="app")]}})
    debugged, events = until(api, "life", ephemeral_running("debugger"))
    [status] = debugged.status.ephemeral_container_statuses
    assert cid(status) in {c.id for c in lab.cri.list_containers({"io.kubernetes.pod.uid": uid,
                                                                  "io.kubernetes.container.name": "debugger"})}
    app, dbg = ns_ids(pid_of(lab, runtime["app"])), ns_ids(pid_of(lab, cid(status)))
    sandbox_ns = ns_ids(lab.cri.sandbox_status(sandbox.id)[1]["pid"])
    assert dbg["pid"] == app["pid"] != sandbox_ns["pid"]  # pid TARGET, really
    assert dbg["net"] == app["net"] == sandbox_ns["net"] and dbg["mnt"] != app["mnt"]
    assert not status.ready and debugged.status.phase == "Running"

    deleting = api.delete_namespaced_pod("life", NS)
    assert deleting.metadata.deletion_timestamp is not None  # graceful: the kubelet finishes it
    w = watch.Watch()
    for event in w.stream(api.list_namespaced_pod, NS, timeout_seconds=30):
        if event["type"] == "DELETED":
            w.stop()
    assert not lab.cri.list_sandboxes({"io.kubernetes.pod.uid": uid})
    assert cluster.kubelets["lab-node"].errors == []


def test_namespace_options_and_users_follow_the_pod_spec(cluster: Cluster, api: Any, lab: Lab) -> None:
    api.create_namespaced_pod(NS, pod("hosty", hostNetwork=True, hostPID=True, hostIPC=True))
    api.create_namespaced_pod(NS, pod("shared", shareProcessNamespace=True))
    api.create_namespaced_pod(NS, pod("users", sleeper("app"), sleeper("other", securityContext={"runAsUser": 1001}),
                                      securityContext={"runAsUser": 1000, "runAsGroup": 1000}))
    host = ns_ids(host_pid())
    hosty, _ = until(api, "hosty", running)
    h = ns_ids(pid_of(lab, cid(hosty.status.container_statuses[0])))
    assert (h["net"], h["pid"], h["ipc"]) == (host["net"], host["pid"], host["ipc"])
    assert hosty.status.pod_ip == hosty.status.host_ip == "127.0.0.1"

    shared, _ = until(api, "shared", running)
    [sandbox] = lab.cri.list_sandboxes({"io.kubernetes.pod.uid": shared.metadata.uid})
    sandbox_pid = ns_ids(lab.cri.sandbox_status(sandbox.id)[1]["pid"])["pid"]
    assert ns_ids(pid_of(lab, cid(shared.status.container_statuses[0])))["pid"] == sandbox_pid
    for name in ("shared", "hosty"):  # the kubelet ignores the target when the pid namespace is shared
        api.patch_namespaced_pod_ephemeralcontainers(name, NS, {"spec": {"ephemeralContainers": [
            sleeper("debugger", targetContainerName="app")]}})
    shared, _ = until(api, "shared", ephemeral_running("debugger"))
    assert ns_ids(pid_of(lab, cid(shared.status.ephemeral_container_statuses[0])))["pid"] == sandbox_pid
    hosty, _ = until(api, "hosty", ephemeral_running("debugger"))
    assert ns_ids(pid_of(lab, cid(hosty.status.ephemeral_container_statuses[0])))["pid"] == host["pid"]

    users, _ = until(api, "users", running)
    ids = {}
    for s in users.status.container_statuses:
        status_lines = Path(f"/proc/{pid_of(lab, cid(s))}/status").read_text().splitlines()
        ids[s.name] = tuple(next(line for line in status_lines if line.startswith(k)).split()[1] for k in ("Uid:",
                                                                                                           "Gid:"))
    assert ids == {"app": ("1000", "1000"), "other": ("1001", "1000")}


def test_runtime_that_ignores_target(lab_cfg: LabConfig, lab: Lab, user_client: Any) -> None:
    """containerd < 1.5 put a TARGET debugger in the sandbox's pid namespace; verification must catch it."""
    with Cluster(lab_cfg, kubelet_options=KubeletOptions(ignore_target=True)) as old:
        api = client.CoreV1Api(user_client(old, "admin-token"))
        api.create_namespaced_pod(NS, pod("old"))
        until(api, "old", running)
        api.patch_namespaced_pod_ephemeralcontainers("old", NS, {"spec": {"ephemeralContainers": [
            sleeper("debugger", targetContainerName="app")]}})
        p, _ = until(api, "old", ephemeral_running("debugger"))
        [sandbox] = lab.cri.list_sandboxes({"io.kubernetes.pod.uid": p.metadata.uid})
        app = ns_ids(pid_of(lab, cid(p.status.container_statuses[0])))
        dbg = ns_ids(pid_of(lab, cid(p.status.ephemeral_container_statuses[0])))
        assert dbg["pid"] == ns_ids(lab.cri.sandbox_status(sandbox.id)[1]["pid"])["pid"] != app["pid"]
        assert p.spec.ephemeral_containers[0].target_container_name == "app"  # the spec still says TARGET


def test_kubelet_that_never_starts_ephemeral_containers(lab_cfg: LabConfig, lab: Lab, user_client: Any) -> None:
    with Cluster(lab_cfg, kubelet_options=KubeletOptions(start_ephemeral=False)) as quiet:
        api = client.CoreV1Api(user_client(quiet, "admin-token"))
        api.create_namespaced_pod(NS, pod("quiet"))
        until(api, "quiet", running)
        accepted = api.patch_namespaced_pod_ephemeralcontainers("quiet", NS, {"spec": {"ephemeralContainers": [
            sleeper("debugger", targetContainerName="app")]}})
        assert [c.name for c in accepted.spec.ephemeral_containers] == ["debugger"]
        quiet.kubelets["lab-node"].wait_synced()
        p = api.read_namespaced_pod("quiet", NS)
        assert p.status.ephemeral_container_statuses is None
        assert not lab.cri.list_containers({"io.kubernetes.pod.uid": p.metadata.uid,
                                            "io.kubernetes.container.name": "debugger"})


def test_waiting_and_terminated_states(cluster: Cluster, api: Any) -> None:
    api.create_namespaced_pod(NS, pod("badimage", sleeper("app", "registry.example/never:1")))
    api.create_namespaced_pod(NS, pod("ok", {"name": "app", "image": "busybox", "command": ["true"]},
                                      restartPolicy="Never"))
    api.create_namespaced_pod(NS, pod("fails", {"name": "app", "image": "busybox", "command": ["sh", "-c", "exit 3"]},
                                      restartPolicy="Never"))
    bad, _ = until(api, "badimage", lambda p: bool(p.status.container_statuses))
    waiting = bad.status.container_statuses[0].state.waiting
    assert waiting.reason == "ErrImagePull" and "registry.example/never:1" in waiting.message
    assert bad.status.phase == "Pending" and not bad.status.container_statuses[0].container_id
    assert {c.type: c.reason for c in bad.status.conditions}["Ready"] == "ContainersNotReady"
    ok, _ = until(api, "ok", lambda p: p.status.phase == "Succeeded")
    assert ok.status.container_statuses[0].state.terminated.reason == "Completed"
    failed, _ = until(api, "fails", lambda p: p.status.phase == "Failed")
    terminated = failed.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")
    assert terminated.container_id == failed.status.container_statuses[0].container_id


def test_shutdown_removes_every_pod_it_created(lab_cfg: LabConfig, lab: Lab, user_client: Any) -> None:
    with Cluster(lab_cfg, nodes=TWO_NODES) as two:
        api = client.CoreV1Api(user_client(two, "admin-token"))
        api.create_namespaced_pod(NS, pod("one"))
        api.create_namespaced_pod(NS, pod("two", nodeName="lab-node-2"))
        one, _ = until(api, "one", running)
        second, _ = until(api, "two", running)
        assert second.status.host_ip == "127.0.0.2" and one.status.host_ip == "127.0.0.1"
        assert two.kubelets["lab-node-2"].sandbox(second.metadata.uid) is not None
        assert two.kubelets["lab-node"].sandbox(second.metadata.uid) is None
        uids = [one.metadata.uid, second.metadata.uid]
    for uid in uids:
        assert not lab.cri.list_sandboxes({"io.kubernetes.pod.uid": uid})
        assert not lab.cri.list_containers({"io.kubernetes.pod.uid": uid})


def _echo(pf: Any, port: int, payload: bytes) -> bytes:
    sock = pf.socket(port)
    sock.settimeout(5)
    sock.sendall(payload)
    got = b""
    with contextlib.suppress(TimeoutError):
        while len(got) < len(payload) and (chunk := sock.recv(65536)):
            got += chunk
    return got


def test_portforward_into_the_pods_network_namespace(cluster: Cluster, api: Any) -> None:
    """Port 8080 listens only inside the pod: the stand-in reaches it through the sandbox's netns."""
    api.create_namespaced_pod(NS, pod("echo", {"name": "app", "image": "busybox",
                                               "command": ["nc", "-ll", "-p", "8080", "-e", "/bin/cat"]}))
    until(api, "echo", running)
    deadline = time.monotonic() + 20
    while True:  # nc may need a moment before it listens
        pf = portforward(api.connect_get_namespaced_pod_portforward, "echo", NS, ports="8080")
        got = _echo(pf, 8080, b"through the pod netns\n")
        pf.close()
        if got == b"through the pod netns\n" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got == b"through the pod netns\n"


@contextlib.contextmanager
def local_forward(api: Any, namespace: str, name: str, port: int) -> Iterator[int]:
    """A local TCP port whose every connection is a new port-forward to the pod (like kubectl port-forward).
    Every socket and thread it made is closed and joined on exit, so no fd is left for a later GC."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    sessions: list[tuple[socket.socket, Any]] = []

    def pump(src: Any, dst: Any) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            pf = portforward(api.connect_get_namespaced_pod_portforward, name, namespace, ports=str(port))
            sessions.append((conn, pf))
            for a, b in ((conn, pf.socket(port)), (pf.socket(port), conn)):
                threads.append(threading.Thread(target=pump, args=(a, b), daemon=True))
                threads[-1].start()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        server.join()
        listener.close()
        for conn, pf in sessions:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            pf.close()
        for t in threads:
            t.join(10)
        for conn, _ in sessions:
            conn.close()


def test_the_agent_is_found_and_reached_like_in_a_cluster(cluster: Cluster, api: Any,
                                                          lab_cfg: LabConfig, tmp_path: Path) -> None:
    """A real agent registered as the DaemonSet pod on lab-node answers, through the API server's
    port-forward, about a pod that the stand-in's kubelet created."""
    api.create_namespaced_pod(NS, pod("target"))
    target, _ = until(api, "target", running)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        agent_port = s.getsockname()[1]
    with running_agent(lab_cfg, tmp_path / "agent.sock", "--listen", f"tcp://127.0.0.1:{agent_port}",
                       kubeconfig=cluster.kubeconfig(tmp_path / "agent.kubeconfig", "agent-token")):
        cluster.register_agent("lab-node", "127.0.0.1", agent_port)
        [agent] = api.list_namespaced_pod(AGENT_NAMESPACE, label_selector="app.kubernetes.io/name=nsinspect-agent",
                                          field_selector=f"spec.nodeName={target.spec.node_name}").items
        with local_forward(api, AGENT_NAMESPACE, agent.metadata.name, 7443) as local, \
                grpc.insecure_channel(f"127.0.0.1:{local}") as channel:
            resp = pb_grpc.AgentStub(channel).Inspect(pb.InspectRequest(pod=pb.PodRef(namespace=NS, name="target")),
                                                      timeout=30, metadata=(("authorization", "Bearer admin-token"),))
    assert resp.pod.uid == target.metadata.uid
    assert {c.name: c.id for c in resp.pod.containers} == {
        s.name: cid(s) for s in target.status.container_statuses}
    api.delete_namespaced_pod(agent.metadata.name, AGENT_NAMESPACE)  # no kubelet runs it: gone at once
    assert api.list_namespaced_pod(AGENT_NAMESPACE).items == []
