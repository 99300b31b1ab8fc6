"""The lab is real: each canonical pod has exactly the namespaces the kubelet and containerd give it."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import grpc
import psutil
import pytest

from nsinspect.proto.rpcerror import rpc_status
from testbed.lab import images, runtime
from testbed.lab.config import POD_SUBNET, LabConfig
from testbed.lab.pods import ContainerSpec, Lab, LabError, LabPod, PodSpec
from tests.nsread import host_pid, ns_ids

pytestmark = pytest.mark.lab

HOST = host_pid()
POD_SHARED = ("net", "ipc", "uts")  # what every container shares with its sandbox in an ordinary pod
HOST_SHARED = ("cgroup", "user", "time")  # cgroup: containerd makes private ones only on pure cgroup v2


def _cgroup_v2_only() -> bool:
    return Path("/sys/fs/cgroup/cgroup.controllers").exists()


def _nsenter(pid: int, flag: str, *cmd: str) -> str:
    return subprocess.run(["nsenter", "-t", str(pid), flag, *cmd], check=True, capture_output=True,
                          text=True).stdout


def assert_ordinary_container(pod: LabPod, name: str) -> None:
    sandbox, host, mine = ns_ids(pod.sandbox_pid), ns_ids(HOST), ns_ids(pod[name].pid)
    for ns in POD_SHARED:
        assert mine[ns] == sandbox[ns], f"{pod.name}/{name} should share {ns} with the sandbox"
    assert mine["mnt"] != sandbox["mnt"] and mine["mnt"] != host["mnt"]
    for ns in HOST_SHARED:
        if ns == "cgroup" and _cgroup_v2_only():
            assert mine[ns] != host[ns]
        else:
            assert mine[ns] == host[ns], f"{pod.name}/{name} should have the host's {ns}"


def test_plain_containers_have_their_own_pid_namespaces(canonical: dict[str, LabPod]) -> None:
    pod = canonical["plain"]
    app, sidecar, sandbox = ns_ids(pod["app"].pid), ns_ids(pod["sidecar"].pid), ns_ids(pod.sandbox_pid)
    assert len({app["pid"], sidecar["pid"], sandbox["pid"], ns_ids(HOST)["pid"]}) == 4
    assert app["mnt"] != sidecar["mnt"], "mnt is never shared"
    for name in ("app", "sidecar"):
        assert_ordinary_container(pod, name)


def test_shared_pod_has_one_pid_namespace(canonical: dict[str, LabPod]) -> None:
    pod = canonical["shared"]
    pids = {ns_ids(p)["pid"] for p in (pod.sandbox_pid, pod["app"].pid, pod["sidecar"].pid)}
    assert len(pids) == 1
    assert pids != {ns_ids(HOST)["pid"]}
    for name in ("app", "sidecar"):
        assert_ordinary_container(pod, name)


def test_targeted_debugger_shares_pid_with_its_target_not_the_sandbox(canonical: dict[str, LabPod]) -> None:
    pod = canonical["targeted"]
    app, debugger, sandbox = ns_ids(pod["app"].pid), ns_ids(pod["debugger"].pid), ns_ids(pod.sandbox_pid)
    assert debugger["pid"] == app["pid"]
    assert debugger["pid"] != sandbox["pid"]
    assert debugger["mnt"] != app["mnt"]
    # Seen from inside, the debugger is not PID 1: the target's init is.
    status = Path(f"/proc/{pod['debugger'].pid}/status").read_text()
    nspid = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
    assert nspid[-1] != "1"
    for name in ("app", "debugger"):
        assert_ordinary_container(pod, name)


def test_hostnet_shares_the_hosts_network_and_uts(canonical: dict[str, LabPod]) -> None:
    pod = canonical["hostnet"]
    app, sandbox, host = ns_ids(pod["app"].pid), ns_ids(pod.sandbox_pid), ns_ids(HOST)
    assert app["net"] == sandbox["net"] == host["net"]
    assert app["uts"] == host["uts"], "a host-network pod keeps the node's UTS namespace on containerd"
    assert app["ipc"] == sandbox["ipc"] != host["ipc"]
    assert app["pid"] not in (sandbox["pid"], host["pid"])


def test_hostpid_shares_the_hosts_pid_namespace(canonical: dict[str, LabPod]) -> None:
    pod = canonical["hostpid"]
    app, host = ns_ids(pod["app"].pid), ns_ids(HOST)
    assert app["pid"] == ns_ids(pod.sandbox_pid)["pid"] == host["pid"]
    assert app["net"] != host["net"]
    assert_ordinary_container(pod, "app")


def test_nonroot_runs_as_uid_1000(canonical: dict[str, LabPod]) -> None:
    proc = psutil.Process(canonical["nonroot"]["app"].pid)
    assert proc.uids().real == 1000 and proc.gids().real == 1000
    assert_ordinary_container(canonical["nonroot"], "app")


@pytest.mark.parametrize("name", ["plain", "shared", "targeted", "hostpid", "nonroot"])
def test_pod_network_and_hostname(canonical: dict[str, LabPod], name: str) -> None:
    pid = canonical[name]["app"].pid
    assert _nsenter(pid, "-u", "hostname").strip() == name
    addrs = json.loads(_nsenter(pid, "-n", "ip", "-j", "-4", "addr", "show", "eth0"))
    ips = [ipaddress.ip_address(a["local"]) for a in addrs[0]["addr_info"]]
    assert ips and all(ip in ipaddress.ip_network(POD_SUBNET) for ip in ips)


def test_lab_pods_carry_kubelet_labels(lab: Lab, canonical: dict[str, LabPod]) -> None:
    pod = canonical["targeted"]
    [sandbox] = lab.cri.list_sandboxes({"io.kubernetes.pod.name": "targeted", "io.kubernetes.pod.namespace": "default"})
    assert sandbox.labels["io.kubernetes.pod.uid"] == pod.uid
    names = {c.labels["io.kubernetes.container.name"] for c in lab.cri.list_containers(sandbox_id=sandbox.id)}
    assert names == {"app", "debugger"}


def test_target_on_a_missing_container_is_refused(lab: Lab) -> None:
    spec = PodSpec("bad-target", (ContainerSpec("debugger", pid="TARGET", target_id="0" * 64),))
    with pytest.raises(grpc.RpcError) as err:
        lab.create_pod(spec)
    code, details = rpc_status(err.value)
    assert code == grpc.StatusCode.NOT_FOUND
    assert "invalid target container" in details
    with pytest.raises(LabError, match="no container 'ghost'"):
        lab.create_pod(PodSpec("bad-target-name", (ContainerSpec("d", pid="TARGET", target="ghost"),)))
    assert not [p for p in lab.pods() if p.name.startswith("bad-target")], "failed pods are cleaned up"


def test_missing_image_is_refused(lab: Lab) -> None:
    with pytest.raises(grpc.RpcError) as err:
        lab.create_pod(PodSpec("bad-image", (ContainerSpec("app", image="nsinspect.local/absent:1"),)))
    code, details = rpc_status(err.value)
    assert code == grpc.StatusCode.NOT_FOUND
    assert "absent" in details
    assert not [p for p in lab.pods() if p.name == "bad-image"]


def test_pod_context_removes_the_pod_even_on_failure(lab: Lab) -> None:
    with pytest.raises(RuntimeError), lab.pod(PodSpec("short-lived", (ContainerSpec("app"),))) as pod:
        pid = pod["app"].pid
        assert psutil.pid_exists(pid)
        raise RuntimeError("test body failed")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "short-lived" not in {p.name for p in lab.pods()}


def test_images_are_reproducible() -> None:
    assert images.build_oci_archive(images.TOOLS) == images.build_oci_archive(images.TOOLS)
    assert images.build_oci_archive(images.TOOLS) != images.build_oci_archive(images.PAUSE)


def _lab_traces(cfg: LabConfig) -> dict[str, object]:
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if line.split()[4].startswith((str(cfg.root) + "/", str(cfg.run)))]
    procs = [p.pid for p in psutil.process_iter(["cmdline"])
             if any(str(cfg.run) in arg for arg in (p.info["cmdline"] or []))]
    cgroups = [str(d) for d in Path("/sys/fs/cgroup").glob(f"*{cfg.cgroup_root}")]
    bridge = subprocess.run(["ip", "link", "show", cfg.bridge], capture_output=True).returncode == 0
    return {"mounts": mounts, "processes": procs, "cgroups": cgroups, "bridge": bridge, "run": cfg.run.exists()}


def test_down_while_pods_run_leaves_nothing_behind(lab_cfg: LabConfig) -> None:
    """A throwaway second lab instance, so the main lab keeps running for the other tests."""
    cfg = LabConfig(name="downtest", slot=1)
    try:
        runtime.up(cfg)
        with Lab(cfg) as other:
            pod = other.create_pod(PodSpec("victim", (ContainerSpec("app"), ContainerSpec("sidecar"))))
        pids = [pod.sandbox_pid, *(c.pid for c in pod.containers.values())]
        netns = list((cfg.state / "io.containerd.grpc.v1.cri").rglob("*"))
        before = _lab_traces(cfg)
        assert before["mounts"] and before["processes"] and before["cgroups"] and before["bridge"] and netns
        runtime.down(cfg, purge=True)
        after = _lab_traces(cfg)
        assert after == {"mounts": [], "processes": [], "cgroups": [], "bridge": False, "run": False}
        assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert runtime.containerd_pid(cfg) is None
        runtime.down(cfg, purge=True)  # idempotent
    finally:
        runtime.down(cfg, purge=True)
