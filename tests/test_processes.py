"""ListProcesses against real lab pods and real processes: attribution to containers, processes that
joined the pod's namespaces from outside, names from each container's own /etc/passwd (and links
out of its root not followed), exits between calls, many processes, CPU sampling, and the CLI."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest

from nsinspect.agent.core.errors import NotFound, NotRunning
from nsinspect.agent.core.model import PodRef
from nsinspect.agent.core.process import ProcessFacts
from nsinspect.agent.observe.processes import ProcessLister
from nsinspect.proto import agent_pb2, observe_pb2
from nsinspect.proto import observe_pb2_grpc as pb_grpc
from nsinspect.proto.rpcerror import rpc_status
from testbed.agentproc import running_agent
from testbed.lab.config import LabConfig
from testbed.lab.images import DISTROLESS
from testbed.lab.pods import ContainerSpec, Lab, LabPod, PodSpec
from tests.nsread import host_pid
from tests.podprocs import QUIET, by_argv, host_process, lister_for, listing, listing_until, until

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lister(lab_cfg: LabConfig) -> Iterator[ProcessLister]:
    with lister_for(lab_cfg) as made:
        yield made


def _pid_ns(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/pid").st_ino


def test_plain_pod_matches_the_runtime_and_psutil(lister: ProcessLister, lab: Lab) -> None:
    # Pods of our own: other suites exec into the canonical ones while we run.
    with lab.pod(PodSpec("ps-plain", (ContainerSpec("app"), ContainerSpec("sidecar")))) as pod:
        _check_plain(listing(lister, "ps-plain"), pod)


def _check_plain(procs: list[ProcessFacts], pod: LabPod) -> None:
    assert [(p.member.container, p.member.sandbox, p.pid_in_pod) for p in procs] == [
        ("", True, 1), ("app", False, 1), ("sidecar", False, 1)]
    assert [p.member.pid for p in procs] == [pod.sandbox_pid, pod["app"].pid, pod["sidecar"].pid]
    assert procs[0].member.container_id == pod.sandbox_id and procs[1].member.container_id == pod["app"].id
    for p in procs:  # psutil, reading the same processes its own way, agrees on every fact
        ref = psutil.Process(p.member.pid)
        assert p.nspid == (p.member.pid, 1) and not p.member.outside
        assert (p.ppid, p.uid, p.gid, p.threads) == (ref.ppid(), ref.uids().effective, ref.gids().effective,
                                                    ref.num_threads())
        assert (list(p.argv), p.comm, p.state) == (ref.cmdline(), ref.name(), ref.status())
        assert p.rss_bytes == ref.memory_info().rss and abs(p.start_time - ref.create_time()) < 0.02
        assert (p.user, p.group) == ("root", "root")


def test_exec_and_nsenter_processes_are_found(lister: ProcessLister, lab: Lab) -> None:
    spec = PodSpec("ps-joiners", (ContainerSpec("app"), ContainerSpec("sidecar")))
    with lab.pod(spec) as pod:
        app = pod["app"]
        lab.exec(app.id, "sh", "-c", f"sleep 301 {QUIET} & sleep 302 {QUIET} &")
        with host_process("nsenter", "-t", str(app.pid), "-p", "-n", "sleep", "303") as entered, \
                host_process("nsenter", "-t", str(pod.sandbox_pid), "-n", "sleep", "304") as net_only:
            procs = listing_until(lister, "ps-joiners",
                                  lambda got: all(by_argv(got, "sleep", n) for n in ("301", "302", "303", "304")))
            for n in ("301", "302"):  # exec'd through the runtime: in app's cgroup, reparented to its init
                [p] = by_argv(procs, "sleep", n)
                assert (p.member.container, p.member.outside, p.ppid) == ("app", False, app.pid)
                assert p.pid_in_pod > 1 and p.nspid[-1] == p.pid_in_pod and _pid_ns(p.member.pid) == _pid_ns(app.pid)

            [nsenter] = [p for p in procs if p.member.pid == entered.pid]  # joined net itself, forked into pid
            assert nsenter.member.outside and nsenter.member.joined == ("net",) and nsenter.pid_in_pod == 0
            [inside] = by_argv(procs, "sleep", "303")
            assert (inside.member.outside, inside.member.container, inside.ppid) == (True, "", entered.pid)
            assert inside.member.joined == ("pid:app", "net") and inside.pid_in_pod > 1
            assert "kubepods" not in inside.cgroup and inside.cgroup == nsenter.cgroup
            [net] = by_argv(procs, "sleep", "304")
            assert net.member.pid == net_only.pid and net.member.joined == ("net",) and net.pid_in_pod == 0

            only_app = listing(lister, "ps-joiners", "app")
            assert {p.member.pid for p in only_app} == {app.pid, inside.member.pid,
                                                        *(p.member.pid for p in by_argv(procs, "sleep"))} - {
                net.member.pid}
            assert all(p.member.container == "app" or p.member.joined[0] == "pid:app" for p in only_app)


def test_ephemeral_like_container_is_listed(lister: ProcessLister, lab: Lab) -> None:
    """A debugger added to a running pod with pid TARGET (what kubectl debug --target makes)."""
    with lab.pod(PodSpec("ps-debugged", (ContainerSpec("app"),))) as started:
        pod = lab.add_container(started, ContainerSpec("debugger", pid="TARGET", target="app"))
        procs = {p.member.container: p for p in listing(lister, "ps-debugged")}
        debugger = procs["debugger"]
        assert (debugger.member.pid, debugger.member.container_id) == (pod["debugger"].pid, pod["debugger"].id)
        assert _pid_ns(debugger.member.pid) == _pid_ns(pod["app"].pid) and debugger.pid_in_pod > 1
        # app's processes share that pid namespace but are app's, not outsiders of the debugger's
        assert [p.member.container for p in listing(lister, "ps-debugged", "debugger")] == ["debugger"]


def test_nonroot_names_come_from_the_containers_passwd(lister: ProcessLister, canonical: dict[str, LabPod]) -> None:
    [app] = [p for p in listing(lister, "nonroot") if p.member.pid == canonical["nonroot"]["app"].pid]
    assert (app.uid, app.gid, app.user, app.group) == (1000, 1000, "labuser", "labgroup")
    try:
        host_name = pwd.getpwuid(1000).pw_name
    except KeyError:
        host_name = ""
    assert host_name != "labuser"  # so the name cannot have come from the node


def test_shared_pod_has_one_pid_namespace(lister: ProcessLister, lab: Lab) -> None:
    with lab.pod(PodSpec("ps-shared", (ContainerSpec("app"), ContainerSpec("sidecar")), pid="POD")):
        procs = listing(lister, "ps-shared")
        assert len({_pid_ns(p.member.pid) for p in procs}) == 1 and len(procs) == 3
        assert procs[0].member.sandbox and procs[0].pid_in_pod == 1
        assert len({p.pid_in_pod for p in procs}) == 3 and all(len(p.nspid) == 2 for p in procs)


def test_hostpid_pod_does_not_list_the_node(lister: ProcessLister, lab: Lab) -> None:
    with lab.pod(PodSpec("ps-hostpid", (ContainerSpec("app"),), pid="NODE")) as pod:
        result = lister.list(PodRef("default", "ps-hostpid"))
    assert [p.member.container or "sandbox" for p in result.processes] == ["sandbox", "app"]
    assert result.processes[1].pid_in_pod == pod["app"].pid  # the node's pid namespace
    assert any("hostPID" in w for w in result.warnings)


def test_container_exits_between_calls(lister: ProcessLister, lab: Lab) -> None:
    spec = PodSpec("ps-exits", (ContainerSpec("app"), ContainerSpec("sidecar")))
    with lab.pod(spec) as pod:
        lab.exec(pod["app"].id, "sh", "-c", f"sleep 305 {QUIET} &")
        [extra] = until("the extra sleep", lambda: by_argv(listing(lister, "ps-exits"), "sleep", "305"))
        assert {p.member.container for p in listing(lister, "ps-exits")} == {"", "app", "sidecar"}
        os.kill(extra.member.pid, 9)  # a process that exits between calls is dropped quietly
        lab.stop_container(pod["sidecar"].id)
        result = lister.list(PodRef("default", "ps-exits"))
        assert {p.member.container for p in result.processes} == {"", "app"}
        assert not by_argv(result.processes, "sleep", "305")
        assert 'container "sidecar" is not running (state: exited): no processes' in result.warnings
        with pytest.raises(NotRunning, match='container "sidecar" of pod default/ps-exits is not running'):
            lister.list(PodRef("default", "ps-exits"), "sidecar")


def test_five_hundred_processes(lister: ProcessLister, lab: Lab) -> None:
    forker = ("sh", "-c", f"for i in $(seq 500); do sleep 600 {QUIET} & done; exec sleep 601")
    with lab.pod(PodSpec("ps-many", (ContainerSpec("app", command=forker),))) as pod:
        procs = listing_until(lister, "ps-many",  # a child counts once it is sleep, no longer the sh it forked as
                              lambda got: len(got) == 501 and len(by_argv(got, "sleep", "600")) == 500, "app")
        children = by_argv(procs, "sleep", "600")
        assert len(children) == 500 and all(p.ppid == pod["app"].pid for p in children)
        assert len({p.pid_in_pod for p in procs}) == 501 and {p.member.container for p in procs} == {"app"}


def test_distroless_has_numbers_but_no_names(lister: ProcessLister, lab: Lab) -> None:
    spec = PodSpec("ps-distroless", (ContainerSpec("app", image=DISTROLESS.name, command=("/app/sleep", "600")),
                                     ContainerSpec("tools")))
    with lab.pod(spec):
        procs = {p.member.container: p for p in listing(lister, "ps-distroless")}
        assert (procs["app"].uid, procs["app"].user, procs["app"].group) == (0, "", "")
        assert procs["app"].argv == ("/app/sleep", "600") and procs["tools"].user == "root"


ESCAPES = (
    # Starts a uid-2 process while its passwd still names uid 2, then swaps in the link out of the root.
    "echo bin2:x:2:2::/:/bin/sh >> /etc/passwd && echo bin2:x:2: >> /etc/group && "
    "start-stop-daemon -S -b -c bin2:bin2 -u bin2 -a /bin/sleep -- 606 && sleep 0.2 && "
    "rm /etc/passwd /etc/group && ln -s {passwd} /etc/passwd && ln -s {group} /etc/group && exec sleep 607"
)


@pytest.mark.parametrize(("passwd", "group", "naive_escapes"), [
    # The node's files through a magic link: /proc/HOST_PID in a hostPID container is a node process.
    (f"/proc/{host_pid()}/root/etc/passwd", f"/proc/{host_pid()}/root/etc/group", True),
    # Climbing: ".." stops at the container's root, so these point back at themselves.
    ("../../../../../../etc/passwd", "/../../etc/group", False),
])
def test_passwd_links_out_of_the_root_are_not_followed(lister: ProcessLister, lab: Lab, passwd: str,
                                                       group: str, naive_escapes: bool) -> None:
    """A reader that follows the magic link from /proc/PID/root reaches the node's files and would
    name uid 2 "bin" (and uid 0 "root"); the agent must not, and must not stall on link loops."""
    command = ("sh", "-c", ESCAPES.format(passwd=passwd, group=group))
    with lab.pod(PodSpec("ps-escape", (ContainerSpec("app", command=command),), pid="NODE")) as pod:
        [low] = until("the uid 2 sleep", lambda: by_argv(listing(lister, "ps-escape"), "/bin/sleep", "606"))
        until("the link", lambda: os.path.islink(f"/proc/{pod['app'].pid}/root/etc/passwd") and
              by_argv(listing(lister, "ps-escape"), "sleep", "607"))
        [init] = by_argv(listing(lister, "ps-escape"), "sleep", "607")
        [low] = by_argv(listing(lister, "ps-escape"), "/bin/sleep", "606")
        assert (low.uid, low.gid, low.user, low.group) == (2, 2, "", "")
        assert (init.uid, init.user, init.group) == (0, "", "")
        if naive_escapes:  # the control: opening /proc/PID/root/etc/passwd really does reach the node's file
            assert Path(f"/proc/{init.member.pid}/root/etc/passwd").read_text() == Path("/etc/passwd").read_text()


def test_links_inside_the_root_and_fifos(lister: ProcessLister, lab: Lab) -> None:
    """An absolute link is resolved inside the container's root, and a FIFO is not opened for reading
    (which would block the agent)."""
    inside = ("sh", "-c", "sed s/labuser/linkeduser/ /etc/passwd > /etc/passwd.real && rm /etc/passwd && "
              "ln -s /etc/passwd.real /etc/passwd && exec sleep 608")
    fifo = ("sh", "-c", "rm /etc/passwd && mkfifo /etc/passwd && exec sleep 609")
    spec = PodSpec("ps-links", (ContainerSpec("linked", command=inside, uid=0), ContainerSpec("fifo", command=fifo)))
    with lab.pod(spec) as pod:
        lab.exec(pod["linked"].id, "sh", "-c", f"start-stop-daemon -S -b -c 1000:1000 -u 1000 -a /bin/sleep -- 610 "
                                               f"{QUIET}")
        [user] = until("the uid 1000 sleep", lambda: by_argv(listing(lister, "ps-links"), "/bin/sleep", "610"))
        assert (user.uid, user.user) == (1000, "linkeduser")
        started = time.monotonic()
        [fifo_init] = [p for p in listing(lister, "ps-links") if p.member.container == "fifo"]
        assert fifo_init.user == "" and fifo_init.group == "root" and time.monotonic() - started < 5


def test_cpu_sampling(lister: ProcessLister, lab: Lab) -> None:
    spec = PodSpec("ps-busy", (ContainerSpec("busy", command=("sh", "-c", "while :; do :; done")),))
    with lab.pod(spec):
        time.sleep(0.5)
        sampled = {p.member.container or "sandbox": p for p in listing(lister, "ps-busy", sample=0.5)}
        lifetime = {p.member.container or "sandbox": p for p in listing(lister, "ps-busy", sample=0.0)}
        assert sampled["busy"].cpu_percent > 10 and sampled["sandbox"].cpu_percent < 5
        assert lifetime["busy"].cpu_percent > 10 and lifetime["sandbox"].cpu_percent < 5


def test_unknown_pod_and_container(lister: ProcessLister, canonical: dict[str, LabPod]) -> None:
    with pytest.raises(NotFound, match="pod default/no-such-pod not found"):
        lister.list(PodRef("default", "no-such-pod"))
    with pytest.raises(NotFound, match='container "ghost" not found in pod default/plain'):
        lister.list(PodRef("default", "plain"), "ghost")


# -- end to end: the real agent and the CLI ----------------------------------------------------------
@pytest.fixture(scope="module")
def agent(lab_cfg: LabConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("observe-agent")
    with running_agent(lab_cfg, tmp / "agent.sock", "--cpu-sample-ms", "100", log=tmp / "agent.log") as address:
        yield address


def cli(agent: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nsinspect.cli.main", *args, "--agent", agent],
                          capture_output=True, text=True, timeout=60)


def test_cli_ps(agent: str, lab: Lab) -> None:
    with lab.pod(PodSpec("ps-cli", (ContainerSpec("app"), ContainerSpec("sidecar")))) as pod:
        lab.exec(pod["app"].id, "sh", "-c", f"sleep 311 {QUIET} &")
        with host_process("nsenter", "-t", str(pod["app"].pid), "-p", "-n", "sleep", "312"):
            until("the joiner", lambda: "sleep 312" in cli(agent, "ps", "ps-cli").stdout)
            text = cli(agent, "ps", "ps-cli")
            assert text.returncode == 0, text.stderr
            lines = text.stdout.splitlines()
            assert lines[0].startswith("Pod default/ps-cli  node lab-node  6 processes  %CPU over 0.1 s")
            assert lines[2].split()[:3] == ["CONTAINER", "PID", "PODPID"]
            assert [line.split()[0] for line in lines[3:9]] == [
                "(sandbox)", "app", "app", "sidecar", "(outside)", "(outside)"]
            assert "in no container of the pod" in text.stdout

            tree = cli(agent, "ps", "ps-cli", "--tree", "--cpu-sample", "0").stdout
            assert f"\napp  {pod['app'].id[:12]}\n  {pod['app'].pid} (1) root /bin/sleep 2147483647\n" in tree
            assert "  └─ " in tree and "sleep 311" in tree and "[pid:app,net]" in tree

            data = json.loads(cli(agent, "ps", "ps-cli", "-c", "app", "-o", "json").stdout)
            assert data["pod"]["name"] == "ps-cli" and data["cpu_sample_ms"] == 100
            assert {(p["container"], p["outside"]) for p in data["processes"]} == {("app", False), ("", True)}
            assert all(p["nspid"] and p["start_ticks"] for p in data["processes"])
            wide = cli(agent, "ps", "ps-cli", "-o", "wide").stdout
            assert "root(0)" in wide and "pid:app,net" in wide


def test_cli_ps_errors(agent: str, canonical: dict[str, LabPod]) -> None:
    missing = cli(agent, "ps", "no-such-pod")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: pod default/no-such-pod not found on this node (NOT_FOUND)"
    ghost = cli(agent, "ps", "plain", "-c", "ghost")
    assert ghost.returncode == 1 and ghost.stderr.strip().endswith("(NOT_FOUND)")
    assert cli(agent, "ps", "plain", "--cpu-sample", "11").returncode == 2
    with grpc.insecure_channel(agent) as channel:
        stub = pb_grpc.ObserveStub(channel)
        request = observe_pb2.ListProcessesRequest(pod=agent_pb2.PodRef(namespace="default", name="plain"),
                                                   cpu_sample_ms=60_000)
        with pytest.raises(grpc.RpcError) as err:
            stub.ListProcesses(request)
        code, details = rpc_status(err.value)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "cpu_sample_ms 60000 is too long" in details
        request = observe_pb2.ListProcessesRequest(pod=agent_pb2.PodRef(namespace="default", name="../etc"))
        with pytest.raises(grpc.RpcError) as err:
            stub.ListProcesses(request)
        assert rpc_status(err.value)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_agent_keeps_no_fds_or_processes(agent: str, canonical: dict[str, LabPod]) -> None:
    [proc] = [p for p in psutil.process_iter(["cmdline"]) if agent in " ".join(p.info["cmdline"] or [])]
    request = observe_pb2.ListProcessesRequest(pod=agent_pb2.PodRef(namespace="default", name="plain"),
                                               cpu_sample_ms=0)
    with grpc.insecure_channel(agent) as channel:
        stub = pb_grpc.ObserveStub(channel)
        stub.ListProcesses(request)
        before, children = proc.num_fds(), {c.pid for c in proc.children()}  # e.g. the exec service's helper
        for _ in range(100):
            stub.ListProcesses(request)
            with pytest.raises(grpc.RpcError):
                stub.ListProcesses(observe_pb2.ListProcessesRequest(pod=agent_pb2.PodRef(name="missing")))
    assert proc.num_fds() <= before + 2 and {c.pid for c in proc.children()} == children
