"""Every RPC of the real agent fed malformed and adversarial input with hypothesis: missing and
oversized fields, path-traversal-like names, unknown enums and namespace types, huge argv, bytes
that are no protobuf at all, and garbage credentials. The agent must answer each with a precise
status (never INTERNAL or UNKNOWN), and keep serving.

Requests go over the unix socket (root: every call reaches its handler) and over TCP with the
stand-in API server behind the agent (garbage credentials must all be UNAUTHENTICATED). Commands
run only in this module's own pod, and only programs that cannot hurt it (true, echo, cat, missing
ones): with a namespace subset without pid, a command would see the node's processes.
"""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nsinspect.agent.core.model import NS_TYPES
from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc
from nsinspect.proto import exec_pb2 as xpb
from nsinspect.proto import exec_pb2_grpc as xpb_grpc
from nsinspect.proto import observe_pb2 as opb
from nsinspect.proto import observe_pb2_grpc as opb_grpc
from nsinspect.proto.rpcerror import rpc_status
from testbed import toolbox
from testbed.agentproc import running_agent
from testbed.cluster.standin import Cluster
from testbed.lab.config import LabConfig
from testbed.lab.pods import ContainerSpec, Lab, PodSpec

pytestmark = pytest.mark.lab
Code = grpc.StatusCode
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
POD = f"fuzz-{uuid.uuid4().hex[:6]}"
NEVER = {Code.INTERNAL, Code.UNKNOWN}
ANSWERS = {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.FAILED_PRECONDITION, Code.PERMISSION_DENIED,
           Code.RESOURCE_EXHAUSTED}


@dataclass
class Agent:
    unix: grpc.Channel
    tcp: str
    proc: psutil.Process

    def alive(self) -> None:
        assert self.proc.is_running() and self.proc.status() != psutil.STATUS_ZOMBIE
        health = health_pb2_grpc.HealthStub(self.unix).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def agent(lab_cfg: LabConfig, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tools = toolbox.build(toolbox.default_dir(lab_cfg))
    with lab.pod(PodSpec(POD, (ContainerSpec("app"), ContainerSpec("side")))), Cluster() as api, \
            running_agent(lab_cfg, tmp / "agent.sock", "--listen", f"tcp://127.0.0.1:{port}", "--toolbox", str(tools),
                          "--audit-log", str(tmp / "audit.log"), "--max-sessions", "4", log=tmp / "agent.log",
                          kubeconfig=api.kubeconfig(tmp / "agent.kubeconfig", "agent-token")) as address, \
            grpc.insecure_channel(address) as channel:
        proc = next(p for p in psutil.process_iter(["cmdline"]) if address in (p.info["cmdline"] or []))
        yield Agent(channel, f"127.0.0.1:{port}", proc)


def answer(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        code, details = rpc_status(err)
        assert code not in NEVER, f"{code}: {details}"
        assert code is not None
        event(code.name)
        return code
    event("OK")
    return Code.OK


# -- strategies ---------------------------------------------------------------------------------------
TRAVERSAL = ["..", "../..", "../../../etc/passwd", "/", ".", "./plain", "plain/..", "a/../b", "%2e%2e", "..%2f",
             "\x00", "plain\x00", "PLAIN", "-plain", "plain-", "a" * 254, "a.b..c", "*", "default/plain",
             "\\..\\", "\u202eplain", "plain\n", " plain", "${HOME}", "$(id)", "`id`"]
adversarial = st.one_of(st.sampled_from(TRAVERSAL), st.text(max_size=80),
                        st.from_regex(r"[a-z0-9][-a-z0-9.]{0,70}", fullmatch=True),
                        st.text(min_size=300, max_size=70_000).map(lambda s: s * 2))
T = Any


def mostly(valid: st.SearchStrategy[T], bad: st.SearchStrategy[T], odds: int = 4) -> st.SearchStrategy[T]:
    """Valid but one time in `odds`, so that requests go deep with a field or two wrong."""
    return st.sampled_from([True] * (odds - 1) + [False]).flatmap(lambda ok: valid if ok else bad)


PODS = ["plain", "shared", "targeted", "hostnet", "hostpid", "nonroot", POD]
names = st.one_of(st.sampled_from(["", "plain", "default", POD, "app", "side", "nonroot", "a" * 63, "a" * 64]),
                  adversarial)
refs = st.builds(pb.PodRef, namespace=mostly(st.sampled_from(["default", ""]), adversarial),
                 name=mostly(st.sampled_from(PODS), names),
                 uid=mostly(st.just(""), st.one_of(names, st.uuids().map(str))))
containers = mostly(st.sampled_from(["", "app", "sidecar", "side", "debugger"]), names)
ns_lists = mostly(st.lists(st.sampled_from(NS_TYPES), max_size=8), st.lists(st.one_of(st.sampled_from(NS_TYPES), names),
                                                                            max_size=12))
facts = mostly(st.just(pb.PodFacts()), st.builds(
    pb.PodFacts, host_network=st.one_of(st.none(), st.booleans()), host_pid=st.one_of(st.none(), st.booleans()),
    share_process_namespace=st.one_of(st.none(), st.booleans()),
    target_container_name=st.dictionaries(names, names, max_size=5)))


def _msg(cls: Any, **fields: Any) -> Any:
    return cls(**{k: v for k, v in fields.items() if v is not None})


# -- unary RPCs over the unix socket ------------------------------------------------------------------------
@FUZZ
@given(pod=refs, container=containers, spec=facts)
def test_inspect(agent: Agent, pod: pb.PodRef, container: str, spec: pb.PodFacts) -> None:
    stub = pb_grpc.AgentStub(agent.unix)
    assert answer(lambda: stub.Inspect(pb.InspectRequest(pod=pod, container=container, facts=spec), timeout=30)) \
        in ANSWERS


@FUZZ
@given(types=ns_lists)
def test_nodemap(agent: Agent, types: list[str]) -> None:
    code = answer(lambda: pb_grpc.AgentStub(agent.unix).NodeMap(pb.NodeMapRequest(types=types), timeout=60))
    assert code == (Code.OK if set(types) <= set(NS_TYPES) else Code.INVALID_ARGUMENT)


@FUZZ
@given(pod=refs, container=containers, sample=mostly(st.integers(0, 20), st.integers(10_001, 2**32 - 1)))
def test_list_processes(agent: Agent, pod: pb.PodRef, container: str, sample: int) -> None:
    stub = opb_grpc.ObserveStub(agent.unix)
    request = opb.ListProcessesRequest(pod=pod, container=container, cpu_sample_ms=sample)
    code = answer(lambda: stub.ListProcesses(request, timeout=30))
    assert code in ANSWERS
    if sample > 10_000:
        assert code == Code.INVALID_ARGUMENT


@FUZZ
@given(pod=refs)
def test_net_info(agent: Agent, pod: pb.PodRef) -> None:
    assert answer(lambda: opb_grpc.ObserveStub(agent.unix).NetInfo(opb.NetInfoRequest(pod=pod), timeout=30)) in ANSWERS


@FUZZ
@given(pod=st.builds(pb.PodRef, namespace=st.sampled_from(["default", ""]), name=st.sampled_from(TRAVERSAL)))
def test_traversal_names_are_invalid_arguments(agent: Agent, pod: pb.PodRef) -> None:
    """Names that are no DNS-1123 names never reach the runtime, /proc or a path."""
    stub, observe = pb_grpc.AgentStub(agent.unix), opb_grpc.ObserveStub(agent.unix)
    for call in (lambda: stub.Inspect(pb.InspectRequest(pod=pod), timeout=30),
                 lambda: observe.NetInfo(opb.NetInfoRequest(pod=pod), timeout=30),
                 lambda: observe.ListProcesses(opb.ListProcessesRequest(pod=pod, cpu_sample_ms=0), timeout=30)):
        assert answer(call) == Code.INVALID_ARGUMENT


METHODS = {"/nsinspect.v1.Agent/Inspect": "unary", "/nsinspect.v1.Agent/NodeMap": "unary",
           "/nsinspect.v1.Observe/ListProcesses": "unary", "/nsinspect.v1.Observe/NetInfo": "unary",
           "/nsinspect.v1.Exec/Exec": "stream"}


@FUZZ
@given(method=st.sampled_from(sorted(METHODS)), body=st.binary(max_size=4096))
def test_bytes_that_are_no_protobuf(agent: Agent, method: str, body: bytes) -> None:
    """Undecodable requests are INVALID_ARGUMENT (gRPC alone would say INTERNAL)."""
    if METHODS[method] == "unary":
        call: Any = agent.unix.unary_unary(method)  # no serializer: the bytes go as they are
        code = answer(lambda: call(body, timeout=30))
    else:
        stream: Any = agent.unix.stream_stream(method)
        code = answer(lambda: list(stream(iter([body]), timeout=30)))
    assert code in ANSWERS


# -- Exec ---------------------------------------------------------------------------------------------------
SAFE = ["true", "false", "echo", "cat", "nsfuzz-missing", "/nonexistent/bin", "./x", "../../bin/true"]


def rarely(valid: st.SearchStrategy[T], bad: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    return mostly(valid, bad, 10)  # Exec has a dozen fields


argvs = rarely(
    st.lists(st.text(max_size=40), max_size=6).flatmap(lambda rest: st.sampled_from(SAFE).map(lambda a: [a, *rest])),
    st.one_of(st.just([]), st.just([""]),
              st.integers(1, 3).map(lambda n: ["echo", *(["x" * 40_000] * n)]),  # around MAX_ARGS_BYTES (128 KiB)
              st.integers(1, 20_000).map(lambda n: ["true", *(["a"] * n)])))
sizes = st.builds(xpb.TerminalSize, rows=mostly(st.integers(0, 200), st.integers(0, 2**32 - 1)),
                  cols=mostly(st.integers(0, 300), st.integers(0, 2**32 - 1)))
ids = mostly(st.none(), st.one_of(st.sampled_from([0, 1000, 65534]), st.integers(0, 2**32 - 1)))


starts = st.builds(
    _msg, st.just(xpb.ExecStart),
    pod=rarely(st.just(pb.PodRef(namespace="default", name=POD)), refs),
    container=rarely(st.sampled_from(["", "app", "side"]), names),
    namespaces=rarely(st.just([]), ns_lists), argv=argvs, tty=st.booleans(), stdin=st.booleans(), size=sizes,
    tools=st.booleans(), user=ids, group=ids, privileged=st.booleans(),
    env=rarely(st.dictionaries(st.from_regex(r"[A-Z_]{1,8}", fullmatch=True), st.text(max_size=20), max_size=3),
               st.dictionaries(st.one_of(st.text(max_size=20), st.sampled_from(["", "A=B", "PATH", "\x00"])),
                               st.one_of(st.text(max_size=50), st.just("v" * 200_000)), max_size=4)),
    workdir=rarely(st.sampled_from(["", "/", "/tmp", "/etc"]), st.one_of(st.sampled_from(TRAVERSAL),
                                                                       st.text(max_size=40))),
    root=rarely(st.just(""), st.one_of(st.sampled_from(["/", "/etc", "/tmp", *TRAVERSAL]), st.text(max_size=40))))
follow_ups = st.lists(st.one_of(
    st.binary(max_size=2048).map(lambda b: xpb.ExecRequest(stdin=b)),
    sizes.map(lambda s: xpb.ExecRequest(resize=s)),
    st.integers(-(2**31), 2**31 - 1).map(lambda n: xpb.ExecRequest(signal=n)),  # type: ignore[arg-type]  # unknown too
    st.sampled_from(list(xpb.Signal.values())).map(lambda n: xpb.ExecRequest(signal=n)),
    st.just(xpb.ExecRequest(close_stdin=True)),
    st.just(xpb.ExecRequest(start=xpb.ExecStart(argv=["true"])))), max_size=6)


@FUZZ
@given(start=starts, rest=follow_ups, first_is_start=mostly(st.just(True), st.just(False)))
def test_exec(agent: Agent, start: xpb.ExecStart, rest: list[xpb.ExecRequest], first_is_start: bool) -> None:
    if start.argv and start.argv[0] == "cat":
        start.stdin = True  # cat reads the follow-ups, then end-of-file
    requests = [xpb.ExecRequest(start=start)] if first_is_start else []
    requests += [*rest, xpb.ExecRequest(close_stdin=True)]
    stub = xpb_grpc.ExecStub(agent.unix)
    code = answer(lambda: list(stub.Exec(iter(requests), timeout=30)))
    assert code in ANSWERS
    if not first_is_start:
        assert code == Code.INVALID_ARGUMENT


# -- credentials over TCP -----------------------------------------------------------------------------------
metadata_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=200),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=4000).map(
        lambda t: f"Bearer {t}"),
    st.sampled_from(["Bearer", "Bearer ", "bearer x", "BEARER admin", "Basic YWRtaW46YWRtaW4=", "Bearer  two",
                     "Bearer agent-token", "Bearer alice-agent-token x"]))


@FUZZ
@given(values=st.lists(metadata_values, min_size=0, max_size=3), method=st.sampled_from(sorted(METHODS)),
       body=st.binary(max_size=256))
def test_garbage_credentials_are_unauthenticated(agent: Agent, values: list[str], method: str, body: bytes) -> None:
    with grpc.insecure_channel(agent.tcp) as channel:
        metadata = tuple(("authorization", v) for v in values)
        unary: Any = channel.unary_unary(method)
        stream: Any = channel.stream_stream(method)
        if METHODS[method] == "unary":
            code = answer(lambda: unary(body, timeout=30, metadata=metadata))
        else:
            code = answer(lambda: list(stream(iter([body]), timeout=30, metadata=metadata)))
    assert code == Code.UNAUTHENTICATED


def test_the_agent_survived(agent: Agent, tmp_path: Path) -> None:
    """After everything above: alive, serving, and no session left behind in the pod."""
    agent.alive()
    stub = xpb_grpc.ExecStub(agent.unix)
    out = list(stub.Exec(iter([xpb.ExecRequest(start=xpb.ExecStart(
        pod=pb.PodRef(namespace="default", name=POD), argv=["sh", "-c", "ps -o args | grep -c nsfuzz || true"])),
        xpb.ExecRequest(close_stdin=True)]), timeout=30))
    assert out[-1].exit.code == 0
    def argv(proc: psutil.Process) -> str:
        try:
            return " ".join(proc.cmdline())
        except psutil.NoSuchProcess:  # the session that just ended, reaped between the two reads
            return "(gone)"

    children = [a for p in agent.proc.children(recursive=True)
                if "nsinspect.agent.enter.forkserver" not in (a := argv(p))]
    assert not [a for a in children if a.split(" ")[0].rsplit("/", 1)[-1] in ("cat", "echo", "true")], children
    assert subprocess.run(["true"]).returncode == 0
