"""Kubernetes cgroup shapes and CRI-O and containerd bundles, from recorded and written-down fixtures (no lab needed).

Every shape the kubelet and runtimes produce must give the pod UID (dashed) and the container id;
everything else (host services, user sessions, plain Docker or Podman) must give nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nsinspect.agent.core.errors import NotFound
from nsinspect.agent.core.model import NamespaceOptions, PodRef, Source
from nsinspect.agent.resolve.bundles import BundleStore, Scan, bundle_from_spec
from nsinspect.agent.resolve.cgroups import (
    CgroupMatch,
    CgroupTree,
    container_dirs,
    parse_cgroup_file,
    parse_cgroup_path,
    pod_dir_candidates,
    read_process_cgroup,
    read_procs,
)
from nsinspect.agent.resolve.proc_source import ProcResolver

FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"
UID = "3f4e9a2c-7b1d-4c8e-9a6f-2d5b8c1e0f47"
U_ = UID.replace("-", "_")
CID = "5f2a9d7c4e1b8a3f6d0c9e2b7a4f1d8c3e6b9a0f2d5c8e1b4a7f0d3c6e9b2a5f"
OTHER = "8d1c4b7e2a5f9c3d6b0e1a4f7c2d5b8e9a3f6c0d1b4e7a2c5f8d9b3e6a0c1d4f"
STATIC_UID = "6b9d5a5e1a2f3c4d5e6f708192a3b4c5"  # static pods: the kubelet's hash of the manifest
SYSTEMD_POD = f"kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice"

SHAPES = {
    # cgroupfs driver, one per QoS class, cgroup v1 and v2 spell the path alike
    "cgroupfs burstable": (f"/kubepods/burstable/pod{UID}/{CID}", CgroupMatch(UID, CID)),
    "cgroupfs guaranteed": (f"/kubepods/pod{UID}/{CID}", CgroupMatch(UID, CID)),
    "cgroupfs besteffort": (f"/kubepods/besteffort/pod{UID}/{CID}", CgroupMatch(UID, CID)),
    "cgroupfs static pod": (f"/kubepods/burstable/pod{STATIC_UID}/{CID}", CgroupMatch(STATIC_UID, CID)),
    "cgroupfs CRI-O": (f"/kubepods/burstable/pod{UID}/crio-{CID}", CgroupMatch(UID, CID, "cri-o")),
    # systemd driver
    "systemd containerd": (f"/kubepods.slice/{SYSTEMD_POD}/cri-containerd-{CID}.scope",
                           CgroupMatch(UID, CID, "containerd")),
    "systemd CRI-O": (f"/kubepods.slice/{SYSTEMD_POD}/crio-{CID}.scope", CgroupMatch(UID, CID, "cri-o")),
    "systemd docker": (f"/kubepods.slice/{SYSTEMD_POD}/docker-{CID}.scope", CgroupMatch(UID, CID, "docker")),
    "systemd guaranteed": (f"/kubepods.slice/kubepods-pod{U_}.slice/cri-containerd-{CID}.scope",
                           CgroupMatch(UID, CID, "containerd")),
    "systemd container with its own sub-cgroups": (
        f"/kubepods.slice/{SYSTEMD_POD}/cri-containerd-{CID}.scope/init.scope", CgroupMatch(UID, CID, "containerd")),
    "systemd slice name under a cgroupfs runtime": (
        f"/system.slice/containerd.service/kubepods-burstable-pod{U_}.slice:cri-containerd:{CID}",
        CgroupMatch(UID, CID, "containerd")),
    # nesting: kind (kubelet root /kubelet), k3d (k3s in Docker), seen from inside and from the host
    "kind": (f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
             f"kubelet-kubepods-besteffort-pod{U_}.slice/cri-containerd-{CID}.scope",
             CgroupMatch(UID, CID, "containerd")),
    "kind seen from the host": (
        f"/system.slice/docker-{OTHER}.scope/kubelet.slice/kubelet-kubepods.slice/"
        f"kubelet-kubepods-pod{U_}.slice/cri-containerd-{CID}.scope", CgroupMatch(UID, CID, "containerd")),
    "k3d seen from the host": (f"/docker/{OTHER}/kubepods/besteffort/pod{UID}/{CID}", CgroupMatch(UID, CID)),
    "k3s service": (f"/system.slice/k3s.service/kubepods/burstable/pod{UID}/{CID}", CgroupMatch(UID, CID)),
    "relative to a private cgroup namespace": (f"/../../besteffort/pod{UID}/{CID}", CgroupMatch(UID, CID)),
    "lab instance root": (f"/kubepods-fallback/besteffort/pod{UID}/{CID}", CgroupMatch(UID, CID)),
    # pod-level cgroups: the pod is known, no container
    "pod cgroup (cgroupfs)": (f"/kubepods/burstable/pod{UID}", CgroupMatch(UID)),
    "pod slice (systemd)": (f"/kubepods.slice/{SYSTEMD_POD}", CgroupMatch(UID)),
    "CRI-O conmon beside the container": (f"/kubepods.slice/{SYSTEMD_POD}/crio-conmon-{CID}.scope", CgroupMatch(UID)),
}

NOT_PODS = {
    "user session": "/user.slice/user-1000.slice/session-3.scope",
    "host service": "/system.slice/containerd.service",
    "root": "/",
    "empty": "",
    "QoS level": "/kubepods/burstable",
    "kubepods slice": "/kubepods.slice/kubepods-besteffort.slice",
    "plain docker": f"/docker/{CID}",
    "plain docker (systemd)": f"/system.slice/docker-{CID}.scope",
    "podman pod": f"/machine.slice/machine-libpod_pod_{OTHER}.slice/libpod-{CID}.scope",
    "not a uid": f"/kubepods/burstable/podnot-a-uid/{CID}",
    "uid too short": f"/kubepods/burstable/pod{UID[:-1]}/{CID}",
}


@pytest.mark.parametrize("path,expected", SHAPES.values(), ids=SHAPES.keys())
def test_kubernetes_cgroup_paths_name_pod_and_container(path: str, expected: CgroupMatch) -> None:
    assert parse_cgroup_path(path) == expected


@pytest.mark.parametrize("path", NOT_PODS.values(), ids=NOT_PODS.keys())
def test_other_cgroup_paths_name_no_pod(path: str) -> None:
    assert parse_cgroup_path(path) is None


def test_short_container_component_is_not_a_container() -> None:
    assert parse_cgroup_path(f"/kubepods/burstable/pod{UID}/{CID[:12]}") == CgroupMatch(UID)


def test_recorded_lab_process_file() -> None:
    text = (FIXTURES / "hybrid-cgroupfs-containerd.txt").read_text()
    match = parse_cgroup_file(text)
    assert match is not None
    assert match.pod_uid == "0cd3ef87-9723-5c15-9ce5-9547fa0e7efe"
    assert match.container_id == "7a6ed6b34e15433c4023318d791d51b5a2bea7ab94a586a3d3b60b9294e4594c"


@pytest.mark.parametrize("name,expected", [
    ("v2-systemd-containerd.txt", CgroupMatch(UID, CID, "containerd")),
    ("v1-systemd-crio.txt", CgroupMatch(UID, CID, "cri-o")),
    ("v2-kind-nested.txt", CgroupMatch(UID, CID, "containerd")),
    ("v2-crio-conmon.txt", CgroupMatch(UID)),
    ("hybrid-host-process.txt", None),
])
def test_cgroup_files(name: str, expected: CgroupMatch | None) -> None:
    assert parse_cgroup_file((FIXTURES / name).read_text()) == expected


def test_a_line_naming_the_container_wins_over_a_pod_level_one() -> None:
    text = f"3:cpu:/kubepods/burstable/pod{UID}\n0::/kubepods/burstable/pod{UID}/{CID}\n"
    assert parse_cgroup_file(text) == CgroupMatch(UID, CID)
    assert parse_cgroup_file("garbage\n\n12:pids\n") is None


# -- finding a pod's cgroup directories without listing the tree ----------------------------------
def _mkcgroup(path: Path, pids: tuple[int, ...] = ()) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.procs").write_text("".join(f"{p}\n" for p in pids))
    return path


@pytest.fixture
def v2_systemd_tree(tmp_path: Path) -> Path:
    """A cgroup v2 mount laid out by the kubelet's systemd driver (a written-down fixture)."""
    _mkcgroup(tmp_path)
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    pod = tmp_path / "kubepods.slice" / SYSTEMD_POD
    _mkcgroup(pod / f"cri-containerd-{CID}.scope", (101, 102))
    _mkcgroup(pod / f"cri-containerd-{OTHER}.scope" / "init.scope", (201,))
    _mkcgroup(pod / f"crio-conmon-{CID}.scope", (99,))
    _mkcgroup(tmp_path / "system.slice" / "containerd.service", (1,))
    return tmp_path


def test_pod_dir_found_directly_in_a_systemd_tree(v2_systemd_tree: Path) -> None:
    tree = CgroupTree(v2_systemd_tree)
    assert tree.hierarchies() == [v2_systemd_tree]
    assert tree.roots() == [v2_systemd_tree / "kubepods.slice"]
    pod_dir = tree.pod_dir(UID)
    assert pod_dir == v2_systemd_tree / "kubepods.slice" / SYSTEMD_POD
    dirs = container_dirs(pod_dir)
    assert set(dirs) == {CID, OTHER}, "conmon's scope is not a container"
    assert sorted(read_procs(dirs[CID])) == [101, 102]
    assert read_procs(dirs[OTHER]) == [201], "members of nested cgroups count"
    assert tree.pod_dir(UID.replace("3f4e", "0000")) is None
    assert tree.all_pod_dirs() == {UID: pod_dir}


def test_pod_dir_found_in_a_hybrid_cgroupfs_tree(tmp_path: Path) -> None:
    _mkcgroup(tmp_path / "unified")
    _mkcgroup(tmp_path / "pids")
    pod = _mkcgroup(tmp_path / "unified" / "kubepods" / "besteffort" / f"pod{UID}")
    _mkcgroup(pod / CID, (7,))
    _mkcgroup(tmp_path / "pids" / "kubepods" / "besteffort" / f"pod{UID}" / CID, (7,))
    tree = CgroupTree(tmp_path)
    assert tree.hierarchies() == [tmp_path / "unified", tmp_path / "pids"]
    assert tree.pod_dir(UID) == pod, "the unified hierarchy comes first"


def test_candidates_follow_the_root_name() -> None:
    kind = Path("/sys/fs/cgroup/kubelet.slice/kubelet-kubepods.slice")
    assert kind / f"kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{U_}.slice" in \
        pod_dir_candidates(kind, UID)
    assert Path(f"/x/kubepods/burstable/pod{UID}") in pod_dir_candidates(Path("/x/kubepods"), UID)


def test_a_new_root_is_found_after_a_miss(v2_systemd_tree: Path) -> None:
    tree = CgroupTree(v2_systemd_tree, rescan_after=0.0)
    assert tree.pod_dir(STATIC_UID) is None
    kind_root = v2_systemd_tree / "kubelet.slice" / "kubelet-kubepods.slice"
    late = _mkcgroup(kind_root / f"kubelet-kubepods-pod{STATIC_UID}.slice")
    assert tree.pod_dir(STATIC_UID) == late


def test_read_process_reads_a_live_process_and_not_a_dead_one() -> None:
    me = read_process_cgroup(os.getpid())
    assert me is not None and me.pid == os.getpid() and me.ppid == os.getppid() and me.start_time > 0
    child = subprocess.Popen(["true"])
    child.wait()
    assert read_process_cgroup(child.pid) is None


# -- CRI-O bundles ---------------------------------------------------------------------------------
SANDBOX_ID = "a" * 64
APP_ID = "b" * 64
DEBUG_ID = "c" * 64
CREATED_ID = "d" * 64


def _crio_spec(kind: str, container: str, namespaces: list[dict[str, str]]) -> dict[str, object]:
    """The parts of a CRI-O config.json we read, as CRI-O writes them (labels copied into annotations)."""
    labels = {"io.kubernetes.pod.name": "web", "io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.uid": UID,
              "io.kubernetes.container.name": container}
    annotations = {
        "io.kubernetes.cri-o.ContainerType": kind,
        "io.kubernetes.cri-o.SandboxID": SANDBOX_ID,
        "io.kubernetes.cri-o.Labels": json.dumps(labels),
        "io.kubernetes.cri-o.Metadata": json.dumps({"name": container}),
        "io.kubernetes.cri-o.ImageName": "registry.k8s.io/pause:3.9" if kind == "sandbox" else "docker.io/nginx:1.25",
        "io.kubernetes.cri-o.Created": "2024-05-01T10:00:00.123456789Z",
        "io.kubernetes.cri-o.HostName": "web",
        **labels,
    }
    return {"ociVersion": "1.0.2-dev", "annotations": annotations, "linux": {"namespaces": namespaces}}


def _write_crio(root: Path, cid: str, spec: dict[str, object], pid: int | None) -> None:
    userdata = root / "overlay-containers" / cid / "userdata"
    userdata.mkdir(parents=True)
    (userdata / "config.json").write_text(json.dumps(spec))
    if pid is not None:
        (userdata / "pidfile").write_text(str(pid))


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Real processes to stand in for a CRI-O pod's infra, app and debugger."""
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(3)]
    yield procs
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture
def crio_state(tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]) -> Path:
    """A CRI-O runroot: pinned net/ipc/uts namespaces shared by path, a pid TARGET, a never-started container."""
    infra, app, _debugger = (p.pid for p in sleepers)
    time.sleep(0.05)  # pid files are written after the processes start
    pinned = [{"type": "network", "path": "/var/run/netns/7c1d"}, {"type": "ipc", "path": "/var/run/ipcns/7c1d"},
              {"type": "uts", "path": "/var/run/utsns/7c1d"}, {"type": "mount"}]
    _write_crio(tmp_path, SANDBOX_ID, _crio_spec("sandbox", "POD", [{"type": "pid"}, *pinned]), infra)
    _write_crio(tmp_path, APP_ID, _crio_spec("container", "app", [{"type": "pid"}, *pinned]), app)
    _write_crio(tmp_path, DEBUG_ID, _crio_spec("container", "debugger",
                                               [{"type": "pid", "path": f"/proc/{app}/ns/pid"}, *pinned]),
                sleepers[2].pid)
    _write_crio(tmp_path, CREATED_ID, _crio_spec("container", "later", [{"type": "pid"}, *pinned]), None)
    return tmp_path


def test_crio_bundles_are_read(crio_state: Path) -> None:
    scan = BundleStore([crio_state]).scan()
    assert scan.available
    by_id = {b.id: b for b in scan.bundles}
    assert set(by_id) == {SANDBOX_ID, APP_ID, DEBUG_ID, CREATED_ID}
    sandbox, app = by_id[SANDBOX_ID], by_id[APP_ID]
    assert sandbox.is_sandbox and not app.is_sandbox
    assert (sandbox.pod_namespace, sandbox.pod_name, sandbox.pod_uid) == ("shop", "web", UID)
    assert sandbox.name == "" and app.name == "app" and app.sandbox_id == SANDBOX_ID
    assert app.image == "docker.io/nginx:1.25" and app.runtime == "cri-o"
    assert app.namespace_path("network") == "/var/run/netns/7c1d" and app.namespace_path("pid") == ""
    assert app.namespace_path("cgroup") is None
    assert app.created_at == 1714557600_123456789


def test_crio_labels_annotation_is_enough() -> None:
    spec = _crio_spec("container", "app", [])
    annotations = spec["annotations"]
    assert isinstance(annotations, dict)
    for key in ("io.kubernetes.pod.name", "io.kubernetes.pod.namespace", "io.kubernetes.pod.uid",
                "io.kubernetes.container.name"):
        del annotations[key]
    bundle = bundle_from_spec(spec, APP_ID, "cri-o")
    assert bundle is not None and (bundle.pod_name, bundle.name, bundle.pod_uid) == ("web", "app", UID)


def test_specs_that_are_not_kubernetes_are_ignored() -> None:
    assert bundle_from_spec({"annotations": {"org.opencontainers.image.ref.name": "x"}}, APP_ID, "cri-o") is None
    assert bundle_from_spec({"annotations": {}}, APP_ID, "containerd") is None


def test_crio_pod_resolves_with_options_from_the_spec(crio_state: Path, sleepers: list[subprocess.Popen[bytes]],
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    # The stand-in processes are not in Kubernetes cgroups: their PIDs are accepted because each
    # process is older than its pid file.
    infra, app, debugger = (p.pid for p in sleepers)
    resolver = ProcResolver([crio_state], cgroup_mount=tmp_path_factory.mktemp("no-cgroups"))
    pod = resolver.resolve(PodRef("shop", "web"))
    assert pod.source is Source.PROC and pod.runtime == "cri-o"
    assert (pod.namespace, pod.name, pod.uid) == ("shop", "web", UID)
    assert pod.sandbox is not None
    assert (pod.sandbox.id, pod.sandbox.pid, pod.sandbox.state) == (SANDBOX_ID, infra, "ready")
    assert pod.sandbox.options == NamespaceOptions("POD", "CONTAINER", "POD")
    assert pod.sandbox.hostname == "web"
    got = {c.name: c for c in pod.containers}
    assert set(got) == {"app", "debugger", "later"}
    assert (got["app"].state, got["app"].pid, got["app"].id) == ("running", app, APP_ID)
    assert got["app"].options == NamespaceOptions("POD", "CONTAINER", "POD")
    assert got["debugger"].pid == debugger
    assert got["debugger"].options == NamespaceOptions("POD", "TARGET", "POD", target_id=APP_ID)
    assert (got["later"].state, got["later"].pid) == ("created", 0)
    assert resolver.resolve(PodRef(uid=UID)).sandbox == pod.sandbox
    assert resolver.resolve(PodRef("shop", "web", UID)).uid == UID

    sleepers[1].kill()
    sleepers[1].wait()
    exited = resolver.resolve(PodRef("shop", "web")).container("app")
    assert exited is not None and (exited.state, exited.pid, exited.start_time) == ("exited", 0, 0)


def test_crio_pid_file_written_before_the_process_started_is_refused(crio_state: Path,
                                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    # Simulates PID reuse: the pid file is old, the process behind the PID is newer.
    newer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        pidfile = crio_state / "overlay-containers" / APP_ID / "userdata" / "pidfile"
        pidfile.write_text(str(newer.pid))
        old = time.time() - 3600
        os.utime(pidfile, (old, old))
        pod = ProcResolver([crio_state], cgroup_mount=tmp_path_factory.mktemp("no-cgroups")).resolve(PodRef(uid=UID))
        app = pod.container("app")
        assert app is not None and (app.state, app.pid) == ("exited", 0)
    finally:
        newer.kill()
        newer.wait()


def test_crio_unknown_pod_and_mismatched_uid(crio_state: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    resolver = ProcResolver([crio_state], cgroup_mount=tmp_path_factory.mktemp("no-cgroups"))
    with pytest.raises(NotFound, match="shop/nope"):
        resolver.resolve(PodRef("shop", "nope"))
    with pytest.raises(NotFound, match=f"has UID {UID}"):
        resolver.resolve(PodRef("shop", "web", STATIC_UID))


# -- containerd task bundles ---------------------------------------------------------------------
def _write_task(state: Path, cid: str, kind: str, pid: int | None) -> Path:
    task = state / "io.containerd.runtime.v2.task" / "k8s.io" / cid
    task.mkdir(parents=True)
    spec = {"annotations": {"io.kubernetes.cri.container-type": kind, "io.kubernetes.cri.sandbox-id": SANDBOX_ID,
                            "io.kubernetes.cri.sandbox-name": "web", "io.kubernetes.cri.sandbox-namespace": "shop",
                            "io.kubernetes.cri.sandbox-uid": UID, "io.kubernetes.cri.container-name": "app"}}
    (task / "config.json").write_text(json.dumps(spec))
    if pid is not None:
        (task / "init.pid").write_text(str(pid))
    return task


def test_containerd_task_bundles_are_read(tmp_path: Path) -> None:
    """Only task bundles count: anything else in the state dir (a stray meta.db) is not read; specs are cached."""
    state = tmp_path / "state"
    (state / "io.containerd.runtime.v2.task").mkdir(parents=True)
    assert BundleStore([state]).scan() == Scan((), True)  # containerd up, no CRI task yet
    sandbox = _write_task(state, SANDBOX_ID, "sandbox", 1)
    app = _write_task(state, APP_ID, "container", None)
    (state / "io.containerd.runtime.v2.task" / "k8s.io" / DEBUG_ID).mkdir()  # no config.json: not a bundle
    db = state / "io.containerd.metadata.v1.bolt" / "meta.db"
    db.parent.mkdir()
    db.write_bytes(os.urandom(4096))
    store = BundleStore([state])
    scan = store.scan()
    assert scan.available
    by_id = {b.id: b for b in scan.bundles}
    assert set(by_id) == {SANDBOX_ID, APP_ID}
    assert (by_id[SANDBOX_ID].is_sandbox, by_id[SANDBOX_ID].pod_name, by_id[SANDBOX_ID].pid_file) == (
        True, "web", sandbox / "init.pid")
    assert (by_id[APP_ID].name, by_id[APP_ID].sandbox_id, by_id[APP_ID].pid_file) == ("app", SANDBOX_ID,
                                                                                       app / "init.pid")
    assert all(b.runtime == "containerd" and b.created_at == 0 for b in scan.bundles)
    again = {b.id: b for b in store.scan().bundles}
    assert all(again[cid] is b for cid, b in by_id.items())


def test_containerd_task_whose_init_died_is_exited(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    infra = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        time.sleep(0.05)  # pid files are written after the processes start
        _write_task(tmp_path, SANDBOX_ID, "sandbox", infra.pid)
        _write_task(tmp_path, APP_ID, "container", dead.pid)
        resolver = ProcResolver([tmp_path], cgroup_mount=tmp_path_factory.mktemp("no-cgroups"))
        pod = resolver.resolve(PodRef("shop", "web"))
        assert pod.runtime == "containerd" and pod.sandbox is not None
        assert (pod.sandbox.id, pod.sandbox.pid, pod.sandbox.state) == (SANDBOX_ID, infra.pid, "ready")
        assert [(c.name, c.id, c.state, c.pid) for c in pod.containers] == [("app", APP_ID, "exited", 0)]
    finally:
        infra.kill()
        infra.wait()
