"""The namespace-entering helper on its own (no gRPC): both ways of joining (one setns(pidfd, mask),
and nsenter's two passes over ns fds for kernels before 5.8), a target in its own user namespace
with a uid map, and a target that is not the process the agent resolved."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nsinspect.agent.core.plan import Plan
from nsinspect.agent.enter.cgroup import Cgroup
from nsinspect.agent.enter.launchers import ForkServer
from nsinspect.agent.enter.session import Session
from nsinspect.agent.enter.sessions import Sessions
from nsinspect.agent.procfs import procns
from testbed.lab.pods import LabPod
from tests.conftest import require_root

pytestmark = pytest.mark.root
TYPES = ("mnt", "pid", "net", "ipc", "uts", "cgroup")


@pytest.fixture(scope="module")
def sessions() -> Iterator[Sessions]:
    require_root()
    cgroup = Cgroup.create()
    made = Sessions(ForkServer(str(cgroup.path) if cgroup else ""), cgroup, 4)
    yield made
    made.close()


def finish(session: Session) -> tuple[bytes, bytes]:
    """Wait for the exit, collecting stdout and stderr."""
    session.wait_started(10)
    assert session.error is None, session.error
    chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    outputs = dict(session.stdio.outputs)
    deadline = time.monotonic() + 20
    while (outputs or session.exit is None) and time.monotonic() < deadline:
        ready, _, _ = select.select([*outputs, session.status.fileno()], [], [], 1)
        for fd in ready:
            if fd in outputs:
                data = session.stdio.read_output(fd)
                if data == b"":
                    del outputs[fd]
                elif data:
                    chunks[outputs[fd]].append(data)
            else:
                session.read_status()
    assert session.exit is not None
    return b"".join(chunks["stdout"]), b"".join(chunks["stderr"])


def run(sessions: Sessions, plan: Plan) -> tuple[bytes, bytes, Session]:
    with sessions.open(plan, False, None) as session:
        out, err = finish(session)
    return out, err, session


@pytest.mark.lab
@pytest.mark.parametrize("join", ["pidfd", "fds"])
def test_both_ways_of_joining_give_the_targets_namespaces(sessions: Sessions, canonical: dict[str, LabPod],
                                                          join: str) -> None:
    target = canonical["targeted"]["debugger"].pid
    script = "; ".join(f"readlink /proc/self/ns/{t}" for t in TYPES)
    out, err, session = run(sessions, Plan(pid=target, start_time=procns.start_time(target),
                                           argv=("sh", "-c", script), join=join))
    assert out.decode().split() == [os.readlink(f"/proc/{target}/ns/{t}") for t in TYPES], err
    assert session.exit == (0, 0)


@pytest.mark.lab
def test_a_reused_pid_is_refused(sessions: Sessions, canonical: dict[str, LabPod]) -> None:
    target = canonical["plain"]["app"].pid
    with sessions.open(Plan(pid=target, start_time=procns.start_time(target) - 1, argv=("true",)),
                       False, None) as session:
        session.wait_started(10)
        assert session.error is not None and session.error["kind"] == "ProcessGone" and session.error["gone"]


# A process in a user namespace of its own, root inside, mapped to 100000 outside, with its own hostname.
TARGET = """
import ctypes, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000 | 0x04000000) != 0:
    sys.exit("unshare failed")
print(os.getpid(), flush=True)
sys.stdin.readline()  # the maps are written
os.setresgid(0, 0, 0)
os.setresuid(0, 0, 0)
socket.sethostname("in-a-userns")
print("ready", flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("join", ["pidfd", "fds"])
def test_a_user_namespace_is_joined_and_ids_are_translated(sessions: Sessions, join: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", TARGET], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        pid = int(proc.stdout.readline())
        Path(f"/proc/{pid}/uid_map").write_text("0 100000 65536")
        Path(f"/proc/{pid}/gid_map").write_text("0 100000 65536")
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "ready\n"
        assert Path(f"/proc/{pid}/status").read_text().count("100000") >= 2  # its ids, seen from the node

        script = "id -u; id -g; hostname; cat /proc/self/uid_map; readlink /proc/self/ns/user"
        out, err, session = run(sessions, Plan(pid=pid, start_time=procns.start_time(pid), argv=("sh", "-c", script),
                                               join=join))
        uid, gid, hostname, mapping, userns = out.decode().splitlines()
        assert (uid, gid, hostname) == ("0", "0", "in-a-userns"), err
        assert mapping.split() == ["0", "100000", "65536"]
        assert userns == os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")
        assert "user" in session.namespaces
    finally:
        proc.kill()
        proc.wait()
