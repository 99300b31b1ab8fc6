"""The agent end to end: a real process on a unix socket, health, reflection, every error code,
and the CLI on top of it with its exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc
from nsinspect.proto.rpcerror import rpc_status
from testbed.agentproc import running_agent
from testbed.lab.config import LabConfig
from testbed.lab.pods import ContainerSpec, Lab, LabPod, PodSpec

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def agent(lab_cfg: LabConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("agent")
    with running_agent(lab_cfg, tmp / "agent.sock", log=tmp / "agent.log") as address:
        yield address


@pytest.fixture(scope="module")
def stub(agent: str) -> Iterator[pb_grpc.AgentStub]:
    with grpc.insecure_channel(agent) as channel:
        yield pb_grpc.AgentStub(channel)


def cli(agent: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nsinspect.cli.main", *args, "--agent", agent],
                          capture_output=True, text=True, timeout=30)


def _code(call: object) -> tuple[grpc.StatusCode | None, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()  # type: ignore[operator]
    return rpc_status(err.value)


def test_health_and_reflection(agent: str) -> None:
    with grpc.insecure_channel(agent) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "nsinspect.v1.Agent"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
                health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        [answer] = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in answer.list_services_response.service}
        assert {"nsinspect.v1.Agent", "grpc.health.v1.Health"} <= names


def test_inspect_over_grpc(stub: pb_grpc.AgentStub, canonical: dict[str, LabPod]) -> None:
    resp = stub.Inspect(pb.InspectRequest(pod=pb.PodRef(namespace="default", name="targeted")))
    assert resp.pod.source == pb.SOURCE_CRI and resp.verdict == pb.VERDICT_OK
    assert resp.pod.sandbox.process.pid == canonical["targeted"].sandbox_pid
    assert {c.name: c.process.pid for c in resp.pod.containers} == {
        n: c.pid for n, c in canonical["targeted"].containers.items()}
    assert resp.host.node_name == "lab-node" and resp.host.cgroup_mode in ("v1", "hybrid", "v2")


@pytest.mark.parametrize(("request_", "code", "text"), [
    (pb.InspectRequest(pod=pb.PodRef(namespace="default", name="no-such-pod")), "NOT_FOUND",
     "pod default/no-such-pod not found"),
    (pb.InspectRequest(pod=pb.PodRef(namespace="default", name="plain"), container="ghost"), "NOT_FOUND",
     'container "ghost" not found in pod default/plain'),
    (pb.InspectRequest(pod=pb.PodRef(namespace="default", name="../../etc/passwd")), "INVALID_ARGUMENT",
     "invalid pod name '../../etc/passwd'"),
    (pb.InspectRequest(pod=pb.PodRef(namespace="Default", name="plain")), "INVALID_ARGUMENT", "invalid namespace"),
    (pb.InspectRequest(pod=pb.PodRef(namespace="default", name="x" * 300)), "INVALID_ARGUMENT", "invalid pod name"),
    (pb.InspectRequest(), "INVALID_ARGUMENT", "a pod name or UID is required"),
    (pb.InspectRequest(pod=pb.PodRef(namespace="default", name="plain"), container="App"), "INVALID_ARGUMENT",
     "invalid container name 'App'"),
])
def test_error_codes(stub: pb_grpc.AgentStub, canonical: dict[str, LabPod], request_: pb.InspectRequest,
                     code: str, text: str) -> None:
    got, details = _code(lambda: stub.Inspect(request_))
    assert got == grpc.StatusCode[code] and text in details
    # ... and the agent keeps serving.
    assert stub.Inspect(pb.InspectRequest(pod=pb.PodRef(namespace="default", name="plain"))).pod.name == "plain"


def test_not_running_is_failed_precondition(stub: pb_grpc.AgentStub, lab: Lab) -> None:
    with lab.pod(PodSpec("half-stopped", (ContainerSpec("app"), ContainerSpec("sidecar")))) as pod:
        lab.stop_container(pod["sidecar"].id)
        got, details = _code(lambda: stub.Inspect(pb.InspectRequest(
            pod=pb.PodRef(namespace="default", name="half-stopped"), container="sidecar")))
        assert got == grpc.StatusCode.FAILED_PRECONDITION and "is not running" in details


def test_unknown_namespace_type_in_node_map(stub: pb_grpc.AgentStub) -> None:
    got, details = _code(lambda: stub.NodeMap(pb.NodeMapRequest(types=["net", "bogus"])))
    assert got == grpc.StatusCode.INVALID_ARGUMENT and "unknown namespace type 'bogus'" in details


def test_node_map_over_grpc(stub: pb_grpc.AgentStub, canonical: dict[str, LabPod]) -> None:
    resp = stub.NodeMap(pb.NodeMapRequest(types=["net"]))
    assert resp.source == pb.SOURCE_CRI and {n.namespace.type for n in resp.namespaces} == {"net"}
    owners = {(o.pod_name, o.container) for n in resp.namespaces for o in n.owners if o.kind == "pod"}
    assert ("targeted", "debugger") in owners and ("plain", "") in owners


def test_cli_ns_text_and_exit_codes(agent: str, canonical: dict[str, LabPod], lab: Lab) -> None:
    ok = cli(agent, "ns", "targeted")
    assert ok.returncode == 0, ok.stderr
    assert "Verification: ok" in ok.stdout and "debugger" in ok.stdout
    assert "pid: the namespace of 'app', as expected" in ok.stdout

    spec = PodSpec("cli-mismatch", (ContainerSpec("app"), ContainerSpec("debugger", pid="POD")))
    with lab.pod(spec):
        fine = cli(agent, "ns", "cli-mismatch")  # the runtime did what its options said
        bad = cli(agent, "ns", "cli-mismatch", "--target", "debugger=app")
    assert fine.returncode == 0, fine.stderr
    assert bad.returncode == 3, bad.stdout + bad.stderr
    assert "Verification: MISMATCH" in bad.stdout and "this runtime ignores TARGET" in bad.stdout
    assert cli(agent, "ns", "plain", "--target", "oops").returncode == 2

    missing = cli(agent, "ns", "no-such-pod")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: pod default/no-such-pod not found on this node (NOT_FOUND)"


def test_cli_machine_output(agent: str, canonical: dict[str, LabPod]) -> None:
    as_json = json.loads(cli(agent, "ns", "shared", "-o", "json").stdout)
    as_yaml = yaml.safe_load(cli(agent, "ns", "shared", "-o", "yaml").stdout)
    assert as_json["pod"]["name"] == as_yaml["pod"]["name"] == "shared"
    assert as_json["verdict"] == "VERDICT_OK"
    assert {r["container"] for r in as_json["comparison"]} == {"app", "sidecar"}
    nsmap = json.loads(cli(agent, "nsmap", "-t", "pid", "-o", "json").stdout)
    assert nsmap["namespaces"] and all(n["namespace"]["type"] == "pid" for n in nsmap["namespaces"])


def test_cli_unreachable_agent(tmp_path: Path) -> None:
    result = cli(f"unix://{tmp_path}/nothing.sock", "ns", "plain")
    assert result.returncode == 1 and result.stderr.startswith("error: cannot reach the agent at unix://")
    assert len(result.stderr.strip().splitlines()) == 1


def test_agent_survives_abuse_without_leaking(agent: str, stub: pb_grpc.AgentStub) -> None:
    [proc] = [p for p in psutil.process_iter(["cmdline"]) if agent in " ".join(p.info["cmdline"] or [])]
    before = proc.num_fds()
    for i in range(100):
        for bad in (pb.InspectRequest(pod=pb.PodRef(namespace="default", name=f"missing-{i}")),
                    pb.InspectRequest(pod=pb.PodRef(namespace="default", name="Bad_Name")),
                    pb.InspectRequest(pod=pb.PodRef(namespace="default", name="plain"), container=f"ghost-{i}")):
            with pytest.raises(grpc.RpcError):
                stub.Inspect(bad)
        stub.Inspect(pb.InspectRequest(pod=pb.PodRef(namespace="default", name="plain")))
        if i % 20 == 0:
            stub.NodeMap(pb.NodeMapRequest(types=["net"]))
    assert proc.is_running() and proc.num_fds() <= before + 2


def test_refuses_tcp_beyond_loopback(lab_cfg: LabConfig, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "nsinspect.agent.main", "--listen", "tcp://0.0.0.0:0",
                             "--cri-endpoint", lab_cfg.endpoint], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "TCP is allowed on loopback addresses only" in result.stderr


def test_cli_by_uid_alone(agent: str, canonical: dict[str, LabPod]) -> None:
    result = cli(agent, "ns", "--uid", canonical["nonroot"].uid, "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pod"]["name"] == "nonroot"
    assert cli(agent, "ns").returncode == 2


def test_listens_on_tcp_loopback_too(lab_cfg: LabConfig, tmp_path: Path) -> None:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with running_agent(lab_cfg, tmp_path / "a.sock", "--listen", f"tcp://127.0.0.1:{port}"), \
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # TCP callers are not root: without credentials they get nothing (tests/test_auth.py has the rest).
        code, details = _code(lambda: pb_grpc.AgentStub(channel).Inspect(
            pb.InspectRequest(pod=pb.PodRef(namespace="default", name="plain"))))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "no credentials" in details
