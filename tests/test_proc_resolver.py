"""The /proc fallback answers like CRI did, on a real containerd that has been stopped.

A throwaway lab instance ("fallback", slot 2) runs copies of canonical pods; what CRI says about
them is recorded, then only containerd is stopped (the shims and containers keep running, as on a
node whose runtime died) and ProcResolver must give the same sandboxes, containers, PIDs and
namespace options, from the OCI bundles or, without them, from cgroups alone.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nsinspect.agent.core.errors import NotFound, RuntimeUnavailable
from nsinspect.agent.core.model import NamespaceOptions, PodInfo, PodRef, Source
from nsinspect.agent.procfs import procns
from nsinspect.agent.resolve.proc_source import ProcResolver
from nsinspect.proto import cri_pb2 as cri
from testbed.lab import runtime
from testbed.lab.config import LabConfig
from testbed.lab.pods import CANONICAL, ContainerSpec, Lab, LabPod, PodSpec, sandbox_config
from tests.conftest import require, require_root

pytestmark = pytest.mark.lab

CFG = LabConfig(name="fallback", slot=2)
NAMESPACE = "nsi-fallback"  # pod UIDs derive from namespace/name: never the same as the main lab's
COMPARED = ("targeted", "shared", "hostnet", "hostpid")
STATES = {cri.CONTAINER_CREATED: "created", cri.CONTAINER_RUNNING: "running", cri.CONTAINER_EXITED: "exited",
          cri.CONTAINER_UNKNOWN: "unknown"}


@dataclass(frozen=True)
class CriContainer:
    id: str
    state: str
    pid: int
    image: str
    options: NamespaceOptions


@dataclass(frozen=True)
class CriPod:
    """What CRI said about one pod while containerd still ran."""

    uid: str
    sandbox_id: str
    sandbox_pid: int
    sandbox_options: NamespaceOptions
    hostname: str
    containers: dict[str, CriContainer]


@dataclass(frozen=True)
class Fallback:
    pods: dict[str, CriPod]
    old_sandbox: str  # the restarted pod's first sandbox, stopped but not removed


def _mode(value: int) -> str:
    return cri.NamespaceMode.Name(cri.NamespaceMode.ValueType(value))


def _record(lab: Lab, pod: LabPod) -> CriPod:
    status, info = lab.cri.sandbox_status(pod.sandbox_id)
    opts = status.linux.namespaces.options
    containers = {}
    for c in lab.cri.list_containers(sandbox_id=pod.sandbox_id):
        _, cinfo = lab.cri.container_status(c.id)
        raw = cinfo["config"]["linux"]["security_context"].get("namespace_options", {})
        options = NamespaceOptions(_mode(raw.get("network", 0)), _mode(raw.get("pid", 0)), _mode(raw.get("ipc", 0)),
                                   raw.get("target_id", ""))
        containers[c.metadata.name] = CriContainer(c.id, STATES[c.state], int(cinfo.get("pid") or 0), c.image.image,
                                                   options)
    return CriPod(pod.uid, pod.sandbox_id, int(info["pid"]),
                  NamespaceOptions(_mode(opts.network), _mode(opts.pid), _mode(opts.ipc)),
                  str(info["config"].get("hostname", "")), containers)


def _restarted_pod(lab: Lab) -> tuple[LabPod, str]:
    """A pod whose first sandbox was stopped and replaced by attempt 1, as the kubelet does."""
    spec = PodSpec("restarted", (ContainerSpec("app"),), namespace=NAMESPACE)
    first = lab.create_pod(spec)
    lab.cri.runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=first.sandbox_id), timeout=30)
    # The kubelet would start "app" as attempt 1; the lab always uses 0, so the old one must go.
    lab.cri.runtime.RemoveContainer(cri.RemoveContainerRequest(container_id=first["app"].id), timeout=30)
    config = sandbox_config(CFG, spec)
    config.metadata.attempt = 1
    second = lab.cri.runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=config), timeout=30).pod_sandbox_id
    pod = LabPod(spec, second, int(lab.cri.sandbox_status(second)[1]["pid"]))
    return lab.add_container(pod, ContainerSpec("app")), first.sandbox_id


@pytest.fixture(scope="module")
def fallback() -> Iterator[Fallback]:
    require_root()
    require(bool(shutil.which("containerd") or shutil.which("apt-get")),
            "containerd is not installed and apt-get cannot install it")
    try:
        runtime.down(CFG)  # whatever an interrupted run left behind
        runtime.up(CFG)
        with Lab(CFG) as lab:
            pods = {}
            for spec in CANONICAL:
                if spec.name in COMPARED:
                    pods[spec.name] = lab.create_pod(dataclasses.replace(spec, namespace=NAMESPACE))
            pods["targeted"] = lab.add_container(pods["targeted"], ContainerSpec("stopped"))
            lab.stop_container(pods["targeted"]["stopped"].id)
            pods["crashing"] = lab.create_pod(PodSpec("crashing", (ContainerSpec("app"),), namespace=NAMESPACE))
            pods["restarted"], old_sandbox = _restarted_pod(lab)
            recorded = {name: _record(lab, pod) for name, pod in pods.items()}
        runtime.stop_containerd(CFG)
        yield Fallback(recorded, old_sandbox)
    finally:
        runtime.down(CFG, purge=True)


def _ref(name: str) -> PodRef:
    return PodRef(NAMESPACE, name)


def _no_bundles(tmp_path: Path) -> ProcResolver:
    return ProcResolver([tmp_path / "no-such-state-dir"])


def test_containerd_is_really_down(fallback: Fallback) -> None:
    assert runtime.containerd_pid(CFG) is None
    for pod in fallback.pods.values():
        os.kill(pod.sandbox_pid, 0)  # sandboxes outlive their runtime


@pytest.mark.parametrize("name", COMPARED)
def test_resolves_like_cri(fallback: Fallback, name: str) -> None:
    want = fallback.pods[name]
    pod = ProcResolver([CFG.state]).resolve(_ref(name))
    assert pod.source is Source.PROC and pod.runtime == "containerd"
    assert (pod.namespace, pod.name, pod.uid) == (NAMESPACE, name, want.uid)
    assert pod.sandbox is not None
    assert (pod.sandbox.id, pod.sandbox.pid, pod.sandbox.state) == (want.sandbox_id, want.sandbox_pid, "ready")
    assert pod.sandbox.start_time == procns.start_time(want.sandbox_pid)
    assert pod.sandbox.options == want.sandbox_options
    assert pod.sandbox.hostname == want.hostname
    # Containers without a task (stopped through CRI before the outage) are not listed; containerd's
    # bundles do not record when a container was created, so created_at is not compared.
    got = {c.name: (c.id, c.state, c.pid, c.image, c.options) for c in pod.containers}
    assert got == {n: (c.id, c.state, c.pid, c.image, c.options) for n, c in want.containers.items()
                   if c.state == "running"}
    for c in pod.containers:
        assert c.start_time == (procns.start_time(c.pid) if c.pid else 0)


def test_targeted_debugger_is_target_of_app(fallback: Fallback) -> None:
    pod = ProcResolver([CFG.state]).resolve(_ref("targeted"))
    app, debugger = pod.container("app"), pod.container("debugger")
    assert app is not None and debugger is not None
    assert debugger.options == NamespaceOptions("POD", "TARGET", "POD", target_id=app.id)
    assert app.options == NamespaceOptions("POD", "CONTAINER", "POD")


def test_container_stopped_through_cri_is_not_listed(fallback: Fallback) -> None:
    # Stopping it through CRI deleted its task and bundle: the fallback no longer knows it (a documented
    # limitation), but the pod and its other containers still resolve, and it is never shown as running.
    want = fallback.pods["targeted"]
    assert want.containers["stopped"].state == "exited"
    pod = ProcResolver([CFG.state]).resolve(_ref("targeted"))
    assert pod.sandbox is not None and (pod.sandbox.id, pod.sandbox.state) == (want.sandbox_id, "ready")
    assert pod.container("stopped") is None
    assert want.containers["stopped"].id not in {c.id for c in pod.containers}
    assert {(c.name, c.id, c.state, c.pid) for c in pod.containers} == {
        (n, c.id, "running", c.pid) for n, c in want.containers.items() if n != "stopped"}


def test_container_exiting_while_containerd_is_down_shows_as_exited(fallback: Fallback) -> None:
    want = fallback.pods["crashing"]
    resolver = ProcResolver([CFG.state])
    app = resolver.resolve(_ref("crashing")).container("app")
    assert app is not None and (app.state, app.pid) == ("running", want.containers["app"].pid)
    os.kill(app.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pod = resolver.resolve(_ref("crashing"))
        app = pod.container("app")
        if app is not None and app.state == "exited":
            break
        time.sleep(0.02)
    assert app is not None and (app.id, app.state, app.pid) == (want.containers["app"].id, "exited", 0)
    assert pod.sandbox is not None and pod.sandbox.state == "ready"


def test_restarted_pod_resolves_to_its_live_sandbox(fallback: Fallback) -> None:
    want = fallback.pods["restarted"]
    pod = ProcResolver([CFG.state]).resolve(_ref("restarted"))
    assert pod.sandbox is not None and want.sandbox_id != fallback.old_sandbox
    assert (pod.sandbox.id, pod.sandbox.state, pod.sandbox.pid) == (want.sandbox_id, "ready", want.sandbox_pid)
    assert [(c.name, c.id, c.state) for c in pod.containers] == [("app", want.containers["app"].id, "running")]


def test_resolves_by_uid_and_by_both(fallback: Fallback) -> None:
    resolver = ProcResolver([CFG.state])
    by_name = resolver.resolve(_ref("targeted"))
    uid = fallback.pods["targeted"].uid
    assert resolver.resolve(PodRef(uid=uid)) == by_name
    assert resolver.resolve(PodRef(NAMESPACE, "targeted", uid)) == by_name
    with pytest.raises(NotFound, match=f"{NAMESPACE}/targeted"):
        resolver.resolve(PodRef(NAMESPACE, "targeted", fallback.pods["shared"].uid))


def test_unknown_pods_are_not_found(fallback: Fallback) -> None:
    resolver = ProcResolver([CFG.state])
    with pytest.raises(NotFound, match=f"{NAMESPACE}/nope"):
        resolver.resolve(_ref("nope"))
    stranger = str(uuid.uuid4())
    with pytest.raises(NotFound, match=stranger):
        resolver.resolve(PodRef(uid=stranger))


@pytest.mark.parametrize("name", COMPARED)
def test_cgroups_alone_give_the_same_ids_and_pids(fallback: Fallback, name: str, tmp_path: Path) -> None:
    want = fallback.pods[name]
    pod = _no_bundles(tmp_path).resolve(PodRef(uid=want.uid))
    assert pod.source is Source.PROC and pod.uid == want.uid
    assert pod.sandbox is not None
    assert (pod.sandbox.id, pod.sandbox.pid, pod.sandbox.state) == (want.sandbox_id, want.sandbox_pid, "ready")
    running = {(c.id, c.pid) for c in want.containers.values() if c.state == "running"}
    assert {(c.id, c.pid) for c in pod.containers} == running
    assert all(c.name == c.id[:13] and c.state == "running" and c.options is None for c in pod.containers)


def test_without_bundles_a_name_cannot_be_resolved(fallback: Fallback, tmp_path: Path) -> None:
    with pytest.raises(RuntimeUnavailable, match=f"{NAMESPACE}/targeted"):
        _no_bundles(tmp_path).resolve(_ref("targeted"))
    with pytest.raises(NotFound):
        _no_bundles(tmp_path).resolve(PodRef(uid=str(uuid.uuid4())))


def test_a_pid_file_naming_another_containers_process_is_refused(fallback: Fallback, tmp_path: Path) -> None:
    # A copy of the app's bundle whose init.pid names the debugger: what PID reuse would look like.
    want = fallback.pods["targeted"]
    for cid, pid in ((want.sandbox_id, want.sandbox_pid), (want.containers["app"].id, want.containers["debugger"].pid)):
        copy = tmp_path / "io.containerd.runtime.v2.task" / "k8s.io" / cid
        copy.mkdir(parents=True)
        shutil.copy(CFG.state / "io.containerd.runtime.v2.task" / "k8s.io" / cid / "config.json", copy)
        (copy / "init.pid").write_text(str(pid))
    pod = ProcResolver([tmp_path]).resolve(_ref("targeted"))
    app = pod.container("app")
    assert pod.sandbox is not None and pod.sandbox.state == "ready"
    assert app is not None and (app.state, app.pid) == ("exited", 0)


def _by_uid(pods: list[PodInfo]) -> dict[str, PodInfo]:
    return {p.uid: p for p in pods}


def test_list_pods(fallback: Fallback, tmp_path: Path) -> None:
    listed = _by_uid(ProcResolver([CFG.state]).list_pods().pods)
    bare = _by_uid(_no_bundles(tmp_path).list_pods().pods)
    for name in (*COMPARED, "restarted"):
        want = fallback.pods[name]
        pod = listed[want.uid]
        assert (pod.namespace, pod.name) == (NAMESPACE, name)
        assert pod.sandbox is not None and pod.sandbox.id == want.sandbox_id
        seen_bare = bare[want.uid].sandbox
        assert seen_bare is not None and seen_bare.id == want.sandbox_id
    assert len([p for p in listed.values() if p.name == "restarted"]) == 1
