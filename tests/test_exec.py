"""`nsinspect exec` end to end: the real agent on a unix socket, real pods of the lab's containerd,
the gRPC stream directly and the CLI on top of it. Every result is cross-checked against what the
kernel says from the node's side (/proc, nsenter), not against the agent's own word."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import psutil
import pytest

from nsinspect.proto import agent_pb2, agent_pb2_grpc
from nsinspect.proto import exec_pb2 as pb
from nsinspect.proto import exec_pb2_grpc as pb_grpc
from nsinspect.proto.rpcerror import rpc_status
from testbed import toolbox
from testbed.agentproc import running_agent
from testbed.execclient import Live, run, start
from testbed.lab.config import LabConfig
from testbed.lab.images import DISTROLESS
from testbed.lab.pods import ContainerSpec, Lab, LabPod, PodSpec

pytestmark = pytest.mark.lab
MAX_SESSIONS = 3
UNIQUE = uuid.uuid4().hex[:6]  # pods of our own: another run of this file may be going on at the same time


# -- the agent ------------------------------------------------------------------------------------------
class Agent:
    def __init__(self, address: str, sock: Path, audit: Path) -> None:
        self.address = address
        self.audit = audit
        self.proc = next(p for p in psutil.process_iter(["cmdline"]) if address in (p.info["cmdline"] or []))
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.ExecStub(self.channel)

    def session_processes(self) -> list[psutil.Process]:
        """Every process below the agent but the idle helper (the fork server and its spares): the
        sessions' enterers, reapers and commands (they live in their containers' cgroups)."""
        found = []
        for proc in self.proc.children(recursive=True):
            try:
                idle = "nsinspect.agent.enter.forkserver" in " ".join(proc.cmdline()) and \
                    proc.name() not in ("nsinspect-enter", "nsinspect-exec")
            except psutil.NoSuchProcess:
                continue
            if not idle:
                found.append(proc)
        return found

    def fds(self) -> int:
        """Open fds of the agent and of its helper (the fork server), but for the helper's socket to each
        idle spare enterer it keeps (one or two, as it refills them)."""
        while True:
            try:
                count = len(os.listdir(f"/proc/{self.proc.pid}/fd"))
                for helper in self.proc.children():
                    if "nsinspect.agent.enter.forkserver" in " ".join(helper.cmdline()):
                        spares = [c for c in helper.children()
                                  if c.name() not in ("nsinspect-enter", "nsinspect-exec")]
                        count += len(os.listdir(f"/proc/{helper.pid}/fd")) - len(spares)
                return count
            except (psutil.NoSuchProcess, FileNotFoundError):  # a spare taken (and gone) meanwhile: again
                time.sleep(0.01)

    def settled_fds(self) -> int:
        """fds() once it has not changed for 0.3 s (the helper refills its spares in the background)."""
        deadline = time.monotonic() + 10
        last, same = self.fds(), 0
        while same < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.fds()
            same, last = (same + 1, now) if now == last else (0, now)
        return last

    def assert_serving(self) -> None:
        result = run(self.stub, start("plain", "true"))
        assert result.exit is not None and result.exit.code == 0


@pytest.fixture(scope="session")
def toolbox_dir(lab_cfg: LabConfig) -> Path:
    return toolbox.build(toolbox.default_dir(lab_cfg))


@pytest.fixture(scope="module")
def agent(lab_cfg: LabConfig, toolbox_dir: Path, canonical: dict[str, LabPod],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    tmp = tmp_path_factory.mktemp("exec")
    sock, audit = tmp / "agent.sock", tmp / "audit.log"
    with running_agent(lab_cfg, sock, "--toolbox", str(toolbox_dir), "--audit-log", str(audit),
                       "--max-sessions", str(MAX_SESSIONS), log=tmp / "agent.log") as address:
        a = Agent(address, sock, audit)
        yield a
        a.channel.close()


@pytest.fixture(scope="module")
def mine(lab: Lab, canonical: dict[str, LabPod]) -> Iterator[LabPod]:
    """A pod of this run's own: what runs in it is ours to assert on, whoever else uses the lab."""
    with lab.pod(PodSpec(f"exec-{UNIQUE}", (ContainerSpec("app"),))) as pod:
        yield pod


@pytest.fixture(scope="module")
def distroless(lab: Lab, canonical: dict[str, LabPod]) -> Iterator[LabPod]:
    spec = PodSpec(f"exec-distroless-{UNIQUE}", (ContainerSpec("app", image=DISTROLESS.name,
                                                     command=tuple(DISTROLESS.entrypoint)),))
    with lab.pod(spec) as pod:
        yield pod


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def ns_inode(pid: int, ns: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{ns}").st_ino


def in_pid_ns(pid: int) -> list[psutil.Process]:
    """Every process in the pid namespace of `pid`, zombies included, seen from the node."""
    inode = ns_inode(pid, "pid")
    found = []
    for proc in psutil.process_iter():
        try:
            if ns_inode(proc.pid, "pid") == inode:
                found.append(proc)
        except OSError:
            continue
    return found


def status_fields(text: str) -> dict[str, str]:
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)}


# -- what the command sees -------------------------------------------------------------------------------
def test_hostname_is_the_pods(agent: Agent, mine: LabPod) -> None:
    result = run(agent.stub, start(mine.name, "hostname"))
    assert result.stdout == f"{mine.name}\n".encode() and result.exit is not None and result.exit.code == 0
    assert result.started is not None and result.started.container == "app"
    # nsenter -a: everything the target has; user is the agent's own, so it is skipped
    assert set(result.started.namespaces) == {"mnt", "pid", "net", "ipc", "uts", "cgroup", "time"}


def test_ip_addr_shows_the_pods_eth0(agent: Agent, canonical: dict[str, LabPod]) -> None:
    result = run(agent.stub, start("plain", "ip", "-4", "addr", "show", "eth0"))
    ours = re.findall(r"inet (127\.100\.[\d.]+/\d+)", result.stdout.decode())
    theirs = subprocess.run(["nsenter", "-t", str(canonical["plain"].sandbox_pid), "-n", "ip", "-4", "addr", "show",
                             "eth0"], capture_output=True, text=True, check=True).stdout
    assert ours and ours == re.findall(r"inet (127\.100\.[\d.]+/\d+)", theirs)


def test_ps_shows_the_containers_processes_only(agent: Agent, mine: LabPod) -> None:
    result = run(agent.stub, start(mine.name, "ps", "-o", "pid,args"))
    rows = [line.split(None, 1) for line in result.stdout.decode().splitlines()[1:]]
    assert ["1", "/bin/sleep 2147483647"] in rows
    # besides the container's own process: our ps, and the session's reaper (the helper)
    others = [args for pid, args in rows if pid != "1"]
    assert len(rows) == 3 and any(a.startswith("ps ") for a in others), rows
    assert any("nsinspect-exec" in a for a in others), rows
    assert eventually(lambda: len(in_pid_ns(mine["app"].pid)) == 1)  # and all gone afterwards


def test_only_net_keeps_the_hosts_pid_namespace(agent: Agent, mine: LabPod) -> None:
    target = mine["app"].pid
    live = Live(agent.stub, start(mine.name, "sh", "-c", "echo $$; exec sleep 300", namespaces=["net"]))
    try:
        assert list(live.wait_started().namespaces) == ["net"]
        pid = int(live.read_until(b"\n").split()[0])  # a PID of the node's namespace: pid was not joined
        assert eventually(lambda: psutil.Process(pid).cmdline() == ["sleep", "300"])
        me = os.getpid()  # in the node's namespaces, as the agent is
        assert ns_inode(pid, "pid") == ns_inode(me, "pid") != ns_inode(target, "pid")
        assert ns_inode(pid, "net") == ns_inode(target, "net") != ns_inode(me, "net")
        assert ns_inode(pid, "uts") == ns_inode(me, "uts")
    finally:
        live.cancel()
    assert eventually(lambda: not psutil.pid_exists(pid))


def test_credentials_are_the_targets(agent: Agent, canonical: dict[str, LabPod]) -> None:
    for pod in ("plain", "nonroot"):
        target = status_fields(Path(f"/proc/{canonical[pod]['app'].pid}/status").read_text())
        ours = status_fields(run(agent.stub, start(pod, "cat", "/proc/self/status")).stdout.decode())
        for field in ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
                      "SigIgn", "SigBlk"):
            assert ours[field] == target[field], (pod, field)
    out = run(agent.stub, start("nonroot", "id")).stdout.decode()
    assert out.startswith("uid=1000(labuser) gid=1000(labgroup)")


def test_user_override_and_privileged(agent: Agent) -> None:
    assert run(agent.stub, start("nonroot", "id", "-u", user=4321)).stdout == b"4321\n"
    fields = status_fields(run(agent.stub, start("nonroot", "cat", "/proc/self/status", privileged=True))
                           .stdout.decode())
    agents = status_fields(Path("/proc/self/status").read_text())
    assert fields["Uid"].split()[0] == "0" and fields["CapEff"] == agents["CapBnd"] == fields["CapBnd"]


def test_environment_and_working_directory(agent: Agent) -> None:
    out = run(agent.stub, start("plain", "sh", "-c", "echo $PATH $EXTRA; pwd", env={"EXTRA": "x y"},
                                workdir="/etc")).stdout
    assert out == b"/bin x y\n/etc\n"  # PATH=/bin is the image's, so the target's environment


# -- tools mode -------------------------------------------------------------------------------------------
def test_tools_mode_runs_busybox_against_a_distroless_container(agent: Agent, distroless: LabPod,
                                                                lab_cfg: LabConfig) -> None:
    plain = run(agent.stub, start(distroless.name, "ls"))
    assert plain.exit is not None and plain.exit.code == 127 and "not found" in plain.exit.error

    script = ("ls /; echo --; ls /target/app; echo --; "
              "touch /target/app/new 2>&1; echo rc=$?; "
              f"test -e {lab_cfg.socket} && echo SOCKET; test -e /var && echo VAR; test -e /work && echo WORK; "
              "ps -o pid,args; hostname; echo ok > /tmp/scratch && cat /tmp/scratch")
    result = run(agent.stub, start(distroless.name, "sh", "-c", script, tools=True))
    assert result.exit is not None and result.exit.code == 0, result
    assert result.started is not None and "mnt" not in result.started.namespaces and result.started.tools
    root, app, rest = result.stdout.decode().split("--\n")
    assert root.split() == ["bin", "dev", "etc", "proc", "target", "tmp"]
    assert app.split() == ["sleep"]
    lines = rest.splitlines()
    assert "Read-only file system" in lines[0] and lines[1] == "rc=1"
    assert not {"SOCKET", "VAR", "WORK"} & set(lines)  # the node's files are out of reach
    assert any(line.split(None, 1)[1:] == ["/app/sleep 2147483647"] for line in lines)
    assert lines[-2:] == [distroless.name, "ok"]
    assert not Path(f"/proc/{distroless['app'].pid}/root/app/new").exists()

    mounts = run(agent.stub, start(distroless.name, "cat", "/proc/self/mountinfo", tools=True)).stdout.decode()
    points = {line.split()[4] for line in mounts.splitlines()}
    assert "/" in points and "/target" in points and not any(p.startswith(("/run", "/var", "/sys")) for p in points)


def test_tools_mode_mountinfo_names_no_path_of_the_nodes(agent: Agent, distroless: LabPod, lab: Lab,
                                                         toolbox_dir: Path) -> None:
    """Every mount's root is one the container's own mountinfo has, a toolbox folder of the tmpfs copy,
    or a device node: not the toolbox's folder on the node, nor the agent's."""
    ours = run(agent.stub, start(distroless.name, "cat", "/proc/self/mountinfo", tools=True)).stdout.decode()
    theirs = Path(f"/proc/{distroless['app'].pid}/mountinfo").read_text()
    allowed = {line.split()[3] for line in theirs.splitlines()} | {"/"} | {f"/{d.name}" for d in toolbox_dir.iterdir()}
    allowed |= {f"/{name}" for name in ("null", "zero", "full", "random", "urandom", "tty")}
    roots = {line.split()[3] for line in ours.splitlines()}
    assert roots <= allowed, roots - allowed
    assert str(toolbox_dir) not in ours and str(Path.cwd()) not in ours
    assert "tmpfs nsinspect-toolbox" in ours


def proc_mounts(mountinfo: str, at: str = "/proc") -> set[tuple[str, str]]:
    """The mounts at and below `at`, as (path below it, per-mount options)."""
    return {(fields[4].removeprefix(at), fields[5]) for fields in (line.split() for line in mountinfo.splitlines())
            if fields[4] == at or fields[4].startswith(at + "/")}


def test_tools_mode_proc_is_the_containers_own(agent: Agent, mine: LabPod) -> None:
    """runc's masked and read-only paths (the kubelet's defaults) hold, because it is the container's
    /proc, cloned: the same mounts, and the same pid namespace."""
    script = ("cat /proc/1/cmdline | tr '\\0' ' '; echo; echo 1 > /proc/sys/vm/drop_caches || echo ro; "
              "cat /proc/self/mountinfo")
    result = run(agent.stub, start(mine.name, "sh", "-c", script, tools=True))
    cmdline, ro, mountinfo = result.stdout.decode().split("\n", 2)
    assert cmdline.strip() == "/bin/sleep 2147483647", result
    assert ro == "ro" and b"Read-only file system" in result.stderr, result
    theirs = proc_mounts(Path(f"/proc/{mine['app'].pid}/mountinfo").read_text())
    ours = proc_mounts(mountinfo)
    assert len(theirs) > 5 and {path for path, _ in ours} == {path for path, _ in theirs}, (ours, theirs)
    assert all("nosuid" in opts and "noexec" in opts for _, opts in ours)


def test_tools_mode_writes_what_the_container_may_write_through_proc_root(agent: Agent, mine: LabPod,
                                                                         canonical: dict[str, LabPod]) -> None:
    """Documented (README, Security): /target is read-only, but /proc/PID/root is the container's root,
    writable as the container's user can write it, as from an ephemeral container with --target."""
    name = f"tools-wrote-{UNIQUE}"
    result = run(agent.stub, start(mine.name, "sh", "-c", f"touch /target/tmp/{name} 2>&1; "
                                   f"touch /proc/1/root/tmp/{name} && echo wrote", tools=True))
    assert b"Read-only file system" in result.stdout and result.stdout.endswith(b"wrote\n"), result
    assert Path(f"/proc/{mine['app'].pid}/root/tmp/{name}").exists()
    nonroot = canonical["nonroot"]
    denied = run(agent.stub, start(nonroot.name, "sh", "-c", "touch /proc/1/root/etc/passwd", tools=True))
    assert denied.exit is not None and denied.exit.code != 0  # uid 1000 may not, there as anywhere


def test_tools_mode_needs_a_toolbox_and_keeps_its_own_mount_namespace(agent: Agent) -> None:
    with pytest.raises(grpc.RpcError) as err:
        run(agent.stub, start("plain", "ls", tools=True, namespaces=["mnt", "net"]))
    assert rpc_status(err.value)[0] == grpc.StatusCode.INVALID_ARGUMENT


# -- streams --------------------------------------------------------------------------------------------
def test_100_mib_round_trip_binary_safe(agent: Agent) -> None:
    data = os.urandom(100 << 20)
    chunks = (data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20))
    result = run(agent.stub, start("plain", "cat", stdin=True), stdin=chunks)
    assert result.exit is not None and result.exit.code == 0
    assert hashlib.sha256(result.stdout).hexdigest() == hashlib.sha256(data).hexdigest()


def test_stdout_and_stderr_stay_apart(agent: Agent) -> None:
    result = run(agent.stub, start("plain", "sh", "-c", "echo out; echo err >&2; exit 3"))
    assert (result.stdout, result.stderr, result.exit and result.exit.code) == (b"out\n", b"err\n", 3)


def test_a_client_that_stops_reading_does_not_grow_the_agent(agent: Agent) -> None:
    live = Live(agent.stub, start("plain", "cat", "/dev/zero"))
    try:
        live.wait_started()
        live.next()
        before = agent.proc.memory_info().rss
        time.sleep(2)  # `cat /dev/zero` would write gigabytes meanwhile if nothing held it back
        grown = agent.proc.memory_info().rss - before
        assert grown < 32 << 20, f"the agent grew by {grown >> 20} MiB while the client did not read"
    finally:
        live.cancel()
    assert eventually(lambda: not agent.session_processes())


def test_stdin_nobody_reads_does_not_grow_the_agent(agent: Agent) -> None:
    live = Live(agent.stub, start("plain", "sleep", "300", stdin=True))
    live.wait_started()
    before = agent.proc.memory_info().rss
    chunk = os.urandom(1 << 20)
    def feed() -> None:
        for _ in range(256):
            live.send(stdin=chunk)

    threading.Thread(target=feed, daemon=True).start()  # 256 MiB offered: flow control holds it at the client
    time.sleep(2)
    grown = agent.proc.memory_info().rss - before
    live.cancel()
    assert grown < 32 << 20, f"the agent grew by {grown >> 20} MiB holding stdin nobody reads"
    assert eventually(lambda: not agent.session_processes())


def test_tty_reports_its_size_and_follows_resizes(agent: Agent) -> None:
    live = Live(agent.stub, start("plain", "sh", tty=True, stdin=True, size=pb.TerminalSize(rows=40, cols=100)))
    live.wait_started()
    live.send(stdin=b"stty size\n")
    live.read_until(b"40 100")
    live.send(resize=pb.TerminalSize(rows=50, cols=132))
    live.send(stdin=b"stty size\n")
    live.read_until(b"50 132")
    live.send(stdin=b"exit 5\n")
    assert live.wait_exit().code == 5


# -- exit status and signals ------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [0, 1, 255])
def test_exit_codes_come_back_exactly(agent: Agent, code: int) -> None:
    result = run(agent.stub, start("plain", "sh", "-c", f"exit {code}"))
    assert result.exit is not None and (result.exit.code, result.exit.signal) == (code, 0)


def test_a_killing_signal_comes_back(agent: Agent) -> None:
    result = run(agent.stub, start("plain", "sh", "-c", "kill -KILL $$"))
    assert result.exit is not None and (result.exit.code, result.exit.signal) == (-1, 9)


@pytest.mark.parametrize(("sig", "number"), [(pb.SIGNAL_INT, 2), (pb.SIGNAL_TERM, 15), (pb.SIGNAL_KILL, 9)])
def test_signals_are_forwarded(agent: Agent, sig: int, number: int) -> None:
    live = Live(agent.stub, start("plain", "sleep", "300"))
    live.wait_started()
    live.send(signal=sig)
    assert live.wait_exit().signal == number


# -- the end of a session ---------------------------------------------------------------------------------
def test_disconnect_kills_the_whole_tree(agent: Agent, mine: LabPod) -> None:
    init = mine["app"].pid
    agent.assert_serving()  # the client's connection is made before counting
    fds = agent.settled_fds()
    script = "sleep 1001 & (setsid sleep 1002 &); (trap '' TERM HUP; sleep 1003) & echo up; sleep 1004"
    live = Live(agent.stub, start(mine.name, "sh", "-c", script))
    live.read_until(b"up\n")

    def sleeps() -> list[str]:
        return [" ".join(p.cmdline()) for p in in_pid_ns(init) if p.name() == "sleep" and p.pid != init]

    assert eventually(lambda: len(sleeps()) == 4), sleeps()
    assert len(agent.session_processes()) >= 6  # enterer, reaper, sh and the sleeps still below it: seen
    live.cancel()
    assert eventually(lambda: [p.pid for p in in_pid_ns(init)] == [init]), \
        [(p.pid, p.name(), p.status()) for p in in_pid_ns(init)]  # no process, and no zombie, left
    assert eventually(lambda: not agent.session_processes())
    assert agent.settled_fds() == fds


def test_what_the_command_leaves_running_ends_with_it(agent: Agent, mine: LabPod) -> None:
    init = mine["app"].pid
    result = run(agent.stub, start(mine.name, "sh", "-c", "(setsid sleep 1005 &); sleep 1006 & echo done"))
    assert result.stdout == b"done\n"
    assert eventually(lambda: [p.pid for p in in_pid_ns(init)] == [init])


# -- errors: precise statuses, and the agent keeps serving ---------------------------------------------
def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode | None, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return rpc_status(err.value)


def test_errors_are_precise_and_leave_the_agent_serving(agent: Agent, lab: Lab) -> None:
    agent.assert_serving()  # the client's connection is made before counting
    fds = agent.settled_fds()
    cases: list[tuple[pb.ExecStart, grpc.StatusCode, str]] = [
        (start("plain", "ls", namespaces=["net", "bogus"]), grpc.StatusCode.INVALID_ARGUMENT,
         "unknown namespace type 'bogus'"),
        (start("plain"), grpc.StatusCode.INVALID_ARGUMENT, "a command is required"),
        (start("plain", "ls", container="ghost"), grpc.StatusCode.NOT_FOUND, 'container "ghost" not found'),
        (start("no-such-pod", "ls"), grpc.StatusCode.NOT_FOUND, "not found"),
        (start("plain", "ls", env={"A=B": "x"}), grpc.StatusCode.INVALID_ARGUMENT, "environment variable name"),
        (start("plain", "ls", workdir="/no/such/dir"), grpc.StatusCode.INVALID_ARGUMENT, "working directory"),
    ]
    for begin, code, text in cases:
        got, details = code_of(lambda b=begin: run(agent.stub, b))  # type: ignore[misc]
        assert (got, text in details) == (code, True), (begin, got, details)
        agent.assert_serving()

    with lab.pod(PodSpec(f"exec-stopped-{UNIQUE}", (ContainerSpec("app"), ContainerSpec("gone")))) as pod:
        lab.stop_container(pod["gone"].id)
        got, details = code_of(lambda: run(agent.stub, start(pod.name, "ls", container="gone")))
        assert got == grpc.StatusCode.FAILED_PRECONDITION and "is not running" in details
    agent.assert_serving()

    missing = run(agent.stub, start("plain", "no-such-command", "arg"))
    assert missing.exit is not None and missing.exit.code == 127
    assert missing.exit.error == '"no-such-command": executable file not found in $PATH (/bin)'
    agent.assert_serving()
    assert agent.settled_fds() == fds


def test_a_stream_that_never_says_start_is_ended(agent: Agent) -> None:
    """A caller that opens Exec and sends nothing must not hold one of the agent's workers."""
    done = threading.Event()

    def silence() -> Iterator[pb.ExecRequest]:
        done.wait(30)
        yield from ()

    got, details = code_of(lambda: list(agent.stub.Exec(silence(), timeout=30)))
    done.set()
    assert got == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "no `start` message within 5 s of opening the Exec stream"
    agent.assert_serving()


def test_the_session_limit(agent: Agent) -> None:
    lives = [Live(agent.stub, start("plain", "sleep", "300")) for _ in range(MAX_SESSIONS)]
    try:
        for live in lives:
            live.wait_started()
        got, details = code_of(lambda: run(agent.stub, start("plain", "true")))
        assert got == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-sessions" in details
    finally:
        for live in lives:
            live.cancel()
    assert eventually(lambda: not agent.session_processes())
    agent.assert_serving()


def test_every_session_is_audited(agent: Agent) -> None:
    run(agent.stub, start("nonroot", "sh", "-c", "cat >/dev/null; echo hi", stdin=True), stdin=[b"12345"])
    lines = [json.loads(line) for line in agent.audit.read_text().splitlines()]
    end = next(e for e in reversed(lines) if e["event"] == "exec.end" and e["pod"]["name"] == "nonroot"
               and e["argv"][0] == "sh")
    begin = next(e for e in lines if e["event"] == "exec.start" and e["session"] == end["session"])
    assert begin["caller"] == end["caller"] == "system:node:local-root"  # the unix socket: root on the node
    assert (end["container"], end["tty"], end["exit_code"], end["signal"], end["status"]) == ("app", False, 0, 0, "OK")
    assert (end["bytes_in"], end["bytes_out"]) == (5, 3)
    assert "user" not in end["namespaces"] and "mnt" in end["namespaces"] and end["start"] <= end["end"]


def test_no_session_runs_unaudited(lab_cfg: LabConfig, canonical: dict[str, LabPod], tmp_path: Path) -> None:
    """An audit log that cannot be written (a full disk: /dev/full) refuses sessions; reads go on."""
    with running_agent(lab_cfg, tmp_path / "full.sock", "--audit-log", "/dev/full") as address, \
            grpc.insecure_channel(address) as channel:
        got, details = code_of(lambda: run(pb_grpc.ExecStub(channel), start("plain", "true")))
        assert got == grpc.StatusCode.UNAVAILABLE
        assert details == ("the session was refused: the agent cannot write its audit log "
                           "([Errno 28] No space left on device)")
        inspected = agent_pb2_grpc.AgentStub(channel).Inspect(
            agent_pb2.InspectRequest(pod=agent_pb2.PodRef(namespace="default", name="plain")), timeout=30)
        assert inspected.pod.name == "plain"


# -- the CLI ---------------------------------------------------------------------------------------------
def cli(agent: Agent, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "nsinspect.cli.main", "exec", "--agent", agent.address, *args],
                          input=stdin, capture_output=True, timeout=120)


def test_cli_exit_codes_and_streams(agent: Agent) -> None:
    assert cli(agent, "plain", "--", "hostname").stdout == b"plain\n"
    done = cli(agent, "plain", "--", "sh", "-c", "echo o; echo e >&2; exit 42")
    assert (done.returncode, done.stdout, done.stderr) == (42, b"o\n", b"e\n")
    assert cli(agent, "plain", "--", "sh", "-c", "kill -TERM $$").returncode == 128 + signal.SIGTERM
    missing = cli(agent, "plain", "--", "nosuch")
    assert missing.returncode == 127 and missing.stderr.decode().startswith('error: "nosuch": executable file not')
    bad = cli(agent, "plain", "--ns", "net,bogus", "--", "ls")
    assert bad.returncode == 1 and bad.stderr.decode().count("\n") == 1 and "INVALID_ARGUMENT" in bad.stderr.decode()
    assert cli(agent, "nonroot", "-c", "app", "--", "id", "-u").stdout == b"1000\n"
    assert cli(agent, "plain", "--tools", "--ns", "net,uts", "--", "hostname").stdout == b"plain\n"


def test_cli_stdin_round_trip(agent: Agent) -> None:
    data = os.urandom(8 << 20)
    done = cli(agent, "plain", "-i", "--", "cat", stdin=data)
    assert done.returncode == 0 and hashlib.sha256(done.stdout).digest() == hashlib.sha256(data).digest()


def test_cli_terminal_raw_mode_and_resize(agent: Agent) -> None:
    import fcntl  # noqa: PLC0415
    import struct  # noqa: PLC0415
    import termios  # noqa: PLC0415

    master, slave = os.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    before = termios.tcgetattr(slave)
    # a session with the pty as its controlling terminal, as a shell in a terminal emulator has
    launcher = ("import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                "os.execv(sys.argv[1], sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", launcher, sys.executable, "-m", "nsinspect.cli.main", "exec",
                             "--agent", agent.address, "plain", "-it", "--", "sh", "-c",
                             "stty size; read line; stty size; read line; exit 3"],
                            stdin=slave, stdout=slave, stderr=slave)
    out = bytearray()

    def until(token: bytes) -> None:
        deadline = time.monotonic() + 20
        while token not in out and time.monotonic() < deadline:
            import select  # noqa: PLC0415

            if select.select([master], [], [], 0.2)[0]:
                out.extend(os.read(master, 4096))
        assert token in out, bytes(out[-400:])

    try:
        until(b"24 80")
        assert termios.tcgetattr(slave)[3] & termios.ECHO == 0  # raw: the remote terminal echoes, not ours
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 120, 0, 0))  # SIGWINCH to the CLI
        os.write(master, b"\r")  # sent after the resize, so the remote terminal has its new size by then
        until(b"33 120")
        os.write(master, b"\r")
        assert proc.wait(20) == 3
        assert termios.tcgetattr(slave) == before  # the terminal is restored
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        os.close(slave)


# -- the other helper mode, and the idle timeout ------------------------------------------------------------
def test_spawned_helper_and_idle_timeout(lab_cfg: LabConfig, mine: LabPod, tmp_path: Path) -> None:
    sock = tmp_path / "spawn.sock"
    with running_agent(lab_cfg, sock, "--exec-helper", "spawn", "--idle-timeout", "1", "--audit-log",
                       str(tmp_path / "audit.log"), log=tmp_path / "agent.log") as address, \
            grpc.insecure_channel(address) as channel:
        stub = pb_grpc.ExecStub(channel)
        assert run(stub, start(mine.name, "hostname")).stdout == f"{mine.name}\n".encode()
        idle = run(stub, start(mine.name, "sleep", "300"))
        assert idle.exit is not None and idle.exit.signal == 9 and "--idle-timeout" in idle.exit.error
        busy = run(stub, start(mine.name, "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.6; done"))
        assert busy.exit is not None and busy.exit.code == 0 and busy.stdout == b"1\n2\n3\n"
        assert eventually(lambda: [p.pid for p in in_pid_ns(mine["app"].pid)] == [mine["app"].pid])
