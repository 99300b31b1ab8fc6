"""Exec "as the container" is confined exactly as CRI exec is, and never opens a door to the node
(issue 13, sections 1 and 2), against the real agent and real pods of the lab's containerd.

What the container's own runtime gives (ExecSync, i.e. `kubectl exec`) is the reference: seccomp,
capabilities, credentials, cgroups, oom_score_adj, LSM label and rlimits must come out the same
through nsinspect. The pod-level pids limit must bound a fork bomb, and a hostile process of a
shareProcessNamespace pod, scanning every fd, root and cwd link it can see while sessions come and
go, must never reach a marker that exists only on the node."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.execclient import Live, run, start
from testbed.lab.config import LabConfig
from testbed.lab.pods import ContainerSpec, Lab, LabPod, PodSpec
from tests import attack, test_exec
from tests.test_exec import Agent, eventually, in_pid_ns, status_fields

pytestmark = pytest.mark.lab
agent, toolbox_dir = test_exec.agent, test_exec.toolbox_dir  # the agent as test_exec runs it, with a toolbox
UNIQUE = uuid.uuid4().hex[:6]
PIDS = 16  # the limited pod's pids.max
MEMORY = 64 << 20
OOM = 700
STATUS_FIELDS = ("Seccomp", "Seccomp_filters", "NoNewPrivs", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                 "Uid", "Gid", "Groups")
READS = {  # what is compared whole: exit code, stdout and stderr
    "cgroup": ("cat", "/proc/self/cgroup"),
    "oom_score_adj": ("cat", "/proc/self/oom_score_adj"),
    "attr/current": ("cat", "/proc/self/attr/current"),  # no LSM here: EINVAL for both, alike
    "limits": ("cat", "/proc/self/limits"),
}
CASES = [("seccomp", "app"), ("limits", "app"), ("plain", "app"), ("shared", "app"), ("hostpid", "app"),
         ("nonroot", "app"), ("targeted", "debugger")]
Outcome = tuple[int, bytes, bytes]
Differences = dict[str, tuple[str | None, str | None] | tuple[Outcome, Outcome]]


@pytest.fixture(scope="module")
def pods(lab: Lab, canonical: dict[str, LabPod]) -> Iterator[dict[str, LabPod]]:
    """The canonical pods, a RuntimeDefault-seccomp pod and a pod with memory, OOM and pids limits."""
    seccomp = PodSpec(f"confine-seccomp-{UNIQUE}", (ContainerSpec("app", seccomp="RuntimeDefault"),))
    limits = PodSpec(f"confine-limits-{UNIQUE}", (ContainerSpec("app", memory_limit=MEMORY, oom_score_adj=OOM),),
                     pids_limit=PIDS)
    with lab.pod(seccomp) as confined, lab.pod(limits) as limited:
        yield {**canonical, "seccomp": confined, "limits": limited}


@pytest.fixture(scope="module")
def attack_pod(lab: Lab, canonical: dict[str, LabPod]) -> Iterator[LabPod]:
    spec = PodSpec(f"confine-attack-{UNIQUE}", (ContainerSpec("victim"), ContainerSpec("attacker")), pid="POD")
    with lab.pod(spec) as pod:
        yield pod


def through_cri(lab: Lab, pod: LabPod, container: str, argv: tuple[str, ...]) -> Outcome:
    got = lab.exec(pod[container].id, *argv)
    return got.exit_code, got.stdout, got.stderr


def through_agent(agent: Agent, pod: LabPod, container: str, argv: tuple[str, ...]) -> Outcome:
    got = run(agent.stub, start(pod.name, *argv, container=container), timeout=30)
    return (got.exit.code if got.exit else -1), got.stdout, got.stderr


# -- the lab's pods are confined as asked (else every comparison below would prove nothing) -------------
def test_the_lab_confines_its_pods_as_asked(lab: Lab, pods: dict[str, LabPod]) -> None:
    confined = status_fields(Path(f"/proc/{pods['seccomp']['app'].pid}/status").read_text())
    assert (confined["Seccomp"], confined["Seccomp_filters"]) == ("2", "1")
    limited = pods["limits"]
    assert Path(f"/proc/{limited['app'].pid}/oom_score_adj").read_text() == f"{OOM}\n"
    memory = lab.container_cgroup(limited, "app", "memory")
    limit = memory / "memory.limit_in_bytes" if (memory / "memory.limit_in_bytes").exists() else memory / "memory.max"
    assert limit.read_text() == f"{MEMORY}\n"
    assert (lab.pod_cgroup(limited) / "pids.max").read_text() == f"{PIDS}\n"
    assert lab.pod_processes(limited) == {limited.sandbox_pid, limited["app"].pid}


# -- exactly what CRI exec gives ------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "container"), CASES, ids=[f"{p}/{c}" for p, c in CASES])
def test_exec_is_confined_like_cri_exec(agent: Agent, lab: Lab, pods: dict[str, LabPod], name: str,
                                        container: str) -> None:
    pod = pods[name]
    argv = ("cat", "/proc/self/status")
    cri_code, cri_out, _ = through_cri(lab, pod, container, argv)
    our_code, our_out, _ = through_agent(agent, pod, container, argv)
    assert (cri_code, our_code) == (0, 0)
    theirs, ours = status_fields(cri_out.decode()), status_fields(our_out.decode())
    differ: Differences = {f: (theirs.get(f), ours.get(f)) for f in STATUS_FIELDS if theirs.get(f) != ours.get(f)}
    for what, read in READS.items():
        expected, got = through_cri(lab, pod, container, read), through_agent(agent, pod, container, read)
        if expected != got:
            differ[what] = (expected, got)
    assert not differ, "\n".join(f"{what}:\n  ExecSync:  {theirs!r}\n  nsinspect: {ours!r}"
                                  for what, (theirs, ours) in differ.items())


def test_a_syscall_the_seccomp_profile_blocks_stays_blocked(agent: Agent, lab: Lab, pods: dict[str, LabPod]) -> None:
    argv = ("unshare", "-U", "-r", "id")  # unshare(CLONE_NEWUSER): RuntimeDefault refuses it
    expected = through_cri(lab, pods["seccomp"], "app", argv)
    assert expected[0] != 0 and b"Operation not permitted" in expected[2], expected  # the premise
    assert through_agent(agent, pods["seccomp"], "app", argv) == expected


def test_a_fork_bomb_stays_inside_the_pods_pids_limit(agent: Agent, lab: Lab, pods: dict[str, LabPod]) -> None:
    pod = pods["limits"]
    top, before = lab.pod_cgroup(pod), lab.pod_processes(pod)

    def refused() -> int:
        """Forks the pids controller refused in the pod ("max N" of pids.events; on cgroup v1 it is counted in
        the forking task's own cgroup, not in the pod's, where the limit is)."""
        return sum(int(f.read_text().split()[1]) for f in top.rglob("pids.events"))

    refused_before, peak, done = refused(), [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], int((top / "pids.current").read_text()))
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    script = f"i=0; while [ $i -lt {PIDS * 4} ]; do sleep 300 & i=$((i+1)); done; echo started $i"
    try:
        result = run(agent.stub, start(pod.name, "sh", "-c", script), timeout=60)
    finally:
        done.set()
        watcher.join()
    assert peak[0] <= PIDS
    assert b"can't fork" in result.stderr and b"started" not in result.stdout, (result.stdout, result.stderr)
    assert refused() > refused_before
    assert eventually(lambda: lab.pod_processes(pod) == before, timeout=10), lab.pod_processes(pod) - before
    app = pod["app"].pid
    assert eventually(lambda: [p.pid for p in in_pid_ns(app)] == [app])  # nor anything in its pid namespace


# -- the attack of section 1: a pod process scanning for the sessions' host fds -------------------------
@pytest.fixture(scope="module")
def scanner(lab_cfg: LabConfig) -> Path:
    return attack.static_binary(attack.FDSCAN, lab_cfg)


def scan_while_sessions_run(agent: Agent, pod: LabPod, scanner: Path, sessions: int, tools: bool) -> dict[str, int]:
    """Run fdscan in `attacker` while `sessions` execs of `true` come and go in `victim`; its counts."""
    tag = uuid.uuid4().hex
    marker, plant, stop = Path(f"/run/nsinspect-escape-{tag}"), f"tmp/plant-{tag}", f"tmp/stop-{tag}"
    attacker_root = Path(f"/proc/{pod['attacker'].pid}/root")
    copied = run(agent.stub, start(pod.name, "sh", "-c", "cat > /tmp/fdscan && chmod +x /tmp/fdscan",
                                   container="attacker", stdin=True), stdin=[scanner.read_bytes()])
    assert copied.exit is not None and copied.exit.code == 0, copied
    (attacker_root / plant).write_text("planted from the node\n")
    marker.mkdir()
    live = Live(agent.stub, start(pod.name, "/tmp/fdscan", str(marker.relative_to("/")), plant, "120", f"/{stop}",
                                  container="attacker"))
    try:
        assert live.read_until(b"\n").startswith(b"selfcheck=1\n"), live.stdout  # it sees through /proc links
        for _ in range(sessions):
            done = run(agent.stub, start(pod.name, "true", container="victim", tools=tools), timeout=30)
            assert done.exit is not None and done.exit.code == 0, done
        (attacker_root / stop).write_text("")
        live.wait_exit()
    finally:
        live.cancel()
        marker.rmdir()
    out = live.stdout.decode()
    counts = dict(re.findall(r"(\w+)=(\d+)", out.splitlines()[-1] if out else ""))
    assert counts.keys() >= {"scanned", "fresh", "hits", "doors"}, out
    found = {k: int(v) for k, v in counts.items()}
    print(f"fdscan after {sessions} {'tools ' if tools else ''}sessions: {found}")  # pytest -rP shows it
    assert found["scanned"] > 0 and found["fresh"] > 0, found  # it really scanned, and saw the sessions
    assert found["hits"] == 0, f"{found['doors']} of the sessions' processes opened a way to the node: {out}"
    return found


def test_a_pod_process_never_reaches_the_node_through_exec_sessions(agent: Agent, attack_pod: LabPod,
                                                                    scanner: Path) -> None:
    scan_while_sessions_run(agent, attack_pod, scanner, sessions=200, tools=False)


def test_a_pod_process_never_reaches_the_node_through_tools_sessions(agent: Agent, attack_pod: LabPod,
                                                                     scanner: Path) -> None:
    scan_while_sessions_run(agent, attack_pod, scanner, sessions=100, tools=True)
