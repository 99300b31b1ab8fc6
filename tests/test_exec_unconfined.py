"""When the container's confinement cannot be reproduced, only nsenter semantics run the command.

The real agent with real TokenReview/SubjectAccessReview on the stand-in, and a real cause: the
container's process is already being traced (a debugger, strace), so its seccomp filter cannot be
read (PTRACE_SECCOMP_GET_FILTER needs the tracer's seat). A user with `create pods/exec` alone is
refused with the reason; a user who also holds `create pods/nsenter` gets the session, without the
filter, and the audit says what was missing. The agent's own check of a session's confinement
(agent/enter/confinecheck.py) is tried on real processes that differ from their container.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from nsinspect.agent.enter import confinecheck
from nsinspect.cli.agentclient import Credentials, open_channel
from nsinspect.proto import exec_pb2_grpc
from nsinspect.proto.rpcerror import rpc_status
from testbed.agentproc import free_port, running_agent
from testbed.cluster.standin import Cluster
from testbed.execclient import run, start
from testbed.lab.config import LabConfig
from testbed.lab.pods import ContainerSpec, Lab, LabPod, PodSpec
from tests.test_auth import TOKENS, setup_users

pytestmark = pytest.mark.lab
POD = f"unconfined-{uuid.uuid4().hex[:6]}"
PTRACE_SEIZE = 0x4206
# A tracer that seizes PID and waits: the process keeps running, but nobody else may trace it.
TRACER = f"""
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(ctypes.c_long({PTRACE_SEIZE}), ctypes.c_long(int(sys.argv[1])), None, None) != 0:
    sys.exit(f"seize: errno {{ctypes.get_errno()}}")
print("seized", flush=True)
time.sleep(3600)
"""


@pytest.fixture(scope="module")
def pod(lab: Lab) -> Iterator[LabPod]:
    with lab.pod(PodSpec(POD, (ContainerSpec("app", seccomp="RuntimeDefault"),))) as created:
        yield created


@pytest.fixture(scope="module")
def agent(lab_cfg: LabConfig, pod: LabPod, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("unconfined")
    port = free_port()
    with Cluster(lab_cfg) as cluster, \
            running_agent(lab_cfg, tmp / "agent.sock", "--listen", f"tcp://127.0.0.1:{port}",
                          "--audit-log", str(tmp / "audit.log"), log=tmp / "agent.log",
                          kubeconfig=cluster.kubeconfig(tmp / "agent.kubeconfig", "agent-token")):
        setup_users(cluster)
        yield f"127.0.0.1:{port}", tmp / "audit.log"


@pytest.fixture
def traced(pod: LabPod) -> Iterator[int]:
    """The container's process, seized by a tracer of the test's for the length of the test."""
    pid = pod["app"].pid
    tracer = subprocess.Popen([sys.executable, "-c", TRACER, str(pid)], stdout=subprocess.PIPE, text=True)
    try:
        assert tracer.stdout is not None and tracer.stdout.readline() == "seized\n"
        yield pid
    finally:
        tracer.send_signal(signal.SIGKILL)
        tracer.wait()


def exec_as(address: str, who: str, *argv: str) -> Any:
    with open_channel(address, Credentials(token=TOKENS[who])) as channel:
        return run(exec_pb2_grpc.ExecStub(channel), start(POD, *argv), timeout=60)


def seccomp_line(output: bytes) -> str:
    return next(line for line in output.decode().splitlines() if line.startswith("Seccomp:"))


def test_confined_as_the_container_when_it_can_be(agent: tuple[str, Path]) -> None:
    result = exec_as(agent[0], "dave", "cat", "/proc/self/status")
    assert seccomp_line(result.stdout) == "Seccomp:\t2"


def test_a_traced_container_refuses_exec_only_users(agent: tuple[str, Path], traced: int) -> None:
    with pytest.raises(grpc.RpcError) as err:
        exec_as(agent[0], "dave", "true")
    code, message = rpc_status(err.value)
    assert code == grpc.StatusCode.FAILED_PRECONDITION, message
    assert "seccomp" in message and "pods/nsenter" in message and "dave" in message, message


def test_nsenter_users_run_it_unconfined_and_it_is_audited(agent: tuple[str, Path], traced: int) -> None:
    address, audit = agent
    result = exec_as(address, "erin", "cat", "/proc/self/status")
    assert result.exit is not None and result.exit.code == 0, result
    assert seccomp_line(result.stdout) == "Seccomp:\t0"  # the one part it could not get
    ends = [json.loads(line) for line in audit.read_text().splitlines()
            if '"exec.end"' in line and '"erin"' in line]
    assert ends and any("seccomp" in why for why in ends[-1]["unconfined"]), ends[-1:]
    assert "cgroups" in ends[-1]["confined"]  # the rest it got


def test_the_agent_tells_a_process_that_is_not_confined_as_its_container(pod: LabPod) -> None:
    container = pod["app"].pid
    me = os.getpid()  # the node's root, every capability, no filter, the node's cgroups
    assert "Seccomp" in confinecheck.mismatch(container, me, set(), True, False)
    assert "Cap" in confinecheck.mismatch(container, me, {"seccomp"}, True, False)
    assert confinecheck.mismatch(container, container, set(), True, False) == ""
    assert confinecheck.mismatch(container, me, set(), True, True) == ""  # --privileged: the agent's powers
