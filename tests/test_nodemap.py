"""The node map is lsns plus owners: same namespaces, counts, lowest PIDs and commands as
`lsns --json` on this node, and owners taken only from verified pod init processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from nsinspect.agent.core.errors import InvalidArgument
from nsinspect.agent.core.model import NS_TYPES, ContainerInfo, NodeNamespace, Owner, PodInfo, SandboxInfo, Source
from nsinspect.agent.core.nsid import NamespaceId
from nsinspect.agent.observe.nodemap import HOST, UNKNOWN, build_node_map, namespace_rows
from nsinspect.agent.procfs import procns
from testbed.lab.pods import Lab, LabPod
from tests.conftest import require_root
from tests.nsread import host_pid, ns_ids

Key = tuple[str, int]  # (type, inode), what lsns prints
Row = tuple[int, int, str]  # (processes, lowest pid, command)


# -- helpers ------------------------------------------------------------------------------
def lsns() -> dict[Key, Row]:
    """`lsns --json`, flattened: it nests namespaces under their process tree's parent."""
    out = json.loads(subprocess.run(["lsns", "--json"], check=True, capture_output=True, text=True).stdout)

    def flat(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for r in rows:
            yield r
            yield from flat(r.get("children", []))

    return {(r["type"], int(r["ns"])): (int(r["nprocs"]), int(r["pid"]), r["command"] or "")
            for r in flat(out["namespaces"])}


def by_key(rows: list[NodeNamespace]) -> dict[Key, Row]:
    return {(r.id.type, r.id.ino): (r.processes, r.lowest_pid, r.command) for r in rows}


def row_of(rows: list[NodeNamespace], pid: int, type_: str) -> NodeNamespace:
    dev, ino = ns_ids(pid)[type_]
    return next(r for r in rows if r.id == NamespaceId(type_, dev, ino))


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def is_zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")


def wait_for(what: str, ready: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextmanager
def running(*argv: str) -> Iterator[subprocess.Popen[bytes]]:
    """A process (and its whole process group) for the length of a with-block, killed and reaped after."""
    proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def exec_done(pid: int, prefix: bytes) -> bool:
    """True once `unshare` has made its namespaces and exec'ed the command starting with `prefix`."""
    return cmdline(pid).startswith(prefix)


def lab_pod_info(p: LabPod) -> PodInfo:
    """What a resolver would answer for a lab pod: PIDs with the start times that pin them."""
    sandbox = SandboxInfo(p.sandbox_id, "ready", p.sandbox_pid, procns.start_time(p.sandbox_pid))
    containers = tuple(ContainerInfo(c.name, c.id, "running", c.pid, start_time=procns.start_time(c.pid))
                       for c in p.containers.values())
    return PodInfo(p.spec.namespace, p.name, p.uid, Source.CRI, sandbox, containers)


def pod_owner(p: LabPod, container: str = "") -> Owner:
    return Owner("pod", p.spec.namespace, p.name, p.uid, container=container, sandbox=not container)


# -- against lsns ---------------------------------------------------------------------------
@pytest.mark.root
def test_fresh_namespaces_match_lsns() -> None:
    """Namespaces only our own processes hold are stable, so every column must agree exactly."""
    require_root()
    threads = "import threading, time\n" \
              "for _ in range(4): threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n" \
              "time.sleep(60)"

    def key(pid: int, type_: str) -> Key:
        return type_, ns_ids(pid)[type_][1]

    def row(members: dict[int, str]) -> Row:
        """Members by PID with their commands; the lowest PID speaks for them (PIDs may wrap)."""
        return len(members), min(members), members[min(members)]

    with ExitStack() as stack:
        alone = stack.enter_context(running("unshare", "--net", "--uts", "--ipc", "sleep", "60"))
        group = stack.enter_context(running("unshare", "--net", "sh", "-c", "sleep 60 & sleep 60 & wait"))
        forked = stack.enter_context(running("unshare", "--pid", "--fork", "--mount", "--kill-child", "sleep", "60"))
        threaded = stack.enter_context(running("unshare", "--net", sys.executable, "-c", threads))
        # sh leaves `true` a zombie (then becomes sleep, which never reaps): it still counts in its pid namespace
        zombied = stack.enter_context(running("unshare", "--pid", "--fork", "--kill-child",
                                              "sh", "-c", "true & exec sleep 60"))
        wait_for("sleep", lambda: exec_done(alone.pid, b"sleep\0"))
        wait_for("sh and two sleeps", lambda: exec_done(group.pid, b"sh\0") and len(children(group.pid)) == 2)
        wait_for("the forked sleep", lambda: any(exec_done(c, b"sleep\0") for c in children(forked.pid)))
        wait_for("four threads", lambda: len(os.listdir(f"/proc/{threaded.pid}/task")) == 5)
        wait_for("sleep and a zombie", lambda: any(
            exec_done(c, b"sleep\0") and [is_zombie(z) for z in children(c)] == [True] for c in children(zombied.pid)))
        (sleeper,) = children(forked.pid)
        (reaper,) = children(zombied.pid)
        (zombie,) = children(reaper)
        sleeps = children(group.pid)

        ours = by_key(build_node_map([], procns.read_host()))
        theirs = lsns()
        expected = {
            key(alone.pid, "net"): row({alone.pid: "sleep 60"}),
            key(alone.pid, "uts"): row({alone.pid: "sleep 60"}),
            key(alone.pid, "ipc"): row({alone.pid: "sleep 60"}),
            key(group.pid, "net"): row({group.pid: "sh -c sleep 60 & sleep 60 & wait",
                                        **dict.fromkeys(sleeps, "sleep 60")}),
            # unshare itself moves into the new mount namespace and forks the sleep into the pid one
            key(forked.pid, "mnt"): row({forked.pid: "unshare --pid --fork --mount --kill-child sleep 60",
                                         sleeper: "sleep 60"}),
            key(sleeper, "pid"): row({sleeper: "sleep 60"}),
            # a process counts once however many threads it has, for lsns and for us
            key(threaded.pid, "net"): row({threaded.pid: f"{sys.executable} -c {threads}"}),
            # a zombie has no nsproxy, but its pid namespace is still its own; lsns shows a zombie's comm
            key(reaper, "pid"): row({reaper: "sleep 60", zombie: "true"}),
        }
    for k, want in expected.items():
        assert theirs.get(k) == want, f"lsns {k}"
        assert ours.get(k) == want, f"ours {k}"


@pytest.mark.root
def test_same_namespaces_as_lsns() -> None:
    """Same set of namespaces as lsns, allowing for ones other processes create or drop meanwhile;
    the initial namespaces have the same lowest PID and command (PID 1 refuses to be read here)."""
    require_root()
    for _attempt in range(5):
        before = by_key(build_node_map([], procns.read_host()))
        theirs = lsns()
        after = by_key(build_node_map([], procns.read_host()))
        if set(before) & set(after) <= set(theirs) <= set(before) | set(after):
            break
    else:
        pytest.fail(f"namespaces differ: only ours {set(before) & set(after) - set(theirs)}, "
                    f"only lsns {set(theirs) - set(before) - set(after)}")
    initial = ns_ids(host_pid())
    for type_ in NS_TYPES:
        k = (type_, initial[type_][1])
        assert after[k][1:] == theirs[k][1:], k
        assert after[k][1] == procns.host_reference_pid()
    if procns.host_reference_pid() != 1:  # PID 1 refuses its ns links: skipped, like lsns does
        assert all(pid != 1 for _, pid, _ in after.values())


@pytest.mark.root
def test_types_order_and_owners_without_pods() -> None:
    require_root()
    rows = build_node_map([], procns.read_host())
    assert rows == sorted(rows, key=lambda r: (NS_TYPES.index(r.id.type), r.id.ino))
    assert len({r.id for r in rows}) == len(rows)
    initial = {NamespaceId(t, *ids) for t, ids in ns_ids(host_pid()).items()}
    for r in rows:
        assert r.owners == ((HOST,) if r.id in initial else (UNKNOWN,)), r
    nets = build_node_map([], procns.read_host(), types=("net", "uts"))
    assert {r.id.type for r in nets} == {"net", "uts"}
    assert {r.id for r in nets} == {r.id for r in rows if r.id.type in ("net", "uts")}
    with pytest.raises(InvalidArgument):
        build_node_map([], procns.read_host(), types=("net", "nope"))


@pytest.mark.root
def test_lowest_pid_gone_falls_back_to_next() -> None:
    """The command is read after the walk; a lowest PID that has exited by then (here: reaped,
    so /proc has no such entry) gives way to the next lowest, and is no longer counted."""
    require_root()
    gone = subprocess.Popen(["true"])
    gone.wait()
    with running("unshare", "--net", "sleep", "60") as member:
        wait_for("sleep", lambda: exec_done(member.pid, b"sleep\0"))
        dev, ino = ns_ids(member.pid)["net"]
        proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        try:
            (row,) = namespace_rows(proc_fd, {NamespaceId("net", dev, ino): [member.pid, gone.pid]})
            (none,) = [namespace_rows(proc_fd, {NamespaceId("net", dev, ino): [gone.pid]})]
        finally:
            os.close(proc_fd)
    assert (row.id.ino, row.processes, row.lowest_pid, row.command) == (ino, 1, member.pid, "sleep 60")
    assert none == [], "a namespace whose processes are all gone is left out"


# -- owners, on the lab's canonical pods -------------------------------------------------
@pytest.fixture
def pods(lab: Lab, canonical: dict[str, LabPod]) -> dict[str, LabPod]:
    """The canonical pods as they run right now (PIDs re-read, in case one was recreated)."""
    now = {p.name: p for p in lab.pods() if p.spec.namespace == "default" and p.name in canonical}
    assert set(now) == set(canonical)
    return now


@pytest.mark.lab
def test_owners_of_canonical_pods(pods: dict[str, LabPod]) -> None:
    require_root()
    rows = build_node_map([lab_pod_info(p) for p in pods.values()], procns.read_host())

    def owners(pid: int, type_: str) -> set[Owner]:
        return set(row_of(rows, pid, type_).owners)

    targeted, shared, hostnet, plain = pods["targeted"], pods["shared"], pods["hostnet"], pods["plain"]
    assert owners(targeted["app"].pid, "pid") == {pod_owner(targeted, "app"), pod_owner(targeted, "debugger")}
    assert owners(targeted.sandbox_pid, "pid") == {pod_owner(targeted)}
    assert owners(shared.sandbox_pid, "pid") == {pod_owner(shared), pod_owner(shared, "app"),
                                                 pod_owner(shared, "sidecar")}
    assert owners(plain.sandbox_pid, "net") == {pod_owner(plain), pod_owner(plain, "app"),
                                                pod_owner(plain, "sidecar")}
    assert owners(hostnet["app"].pid, "net") == {HOST, pod_owner(hostnet), pod_owner(hostnet, "app")}
    assert owners(pods["hostpid"]["app"].pid, "pid") >= {HOST, pod_owner(pods["hostpid"], "app")}
    for p in pods.values():
        assert owners(p.sandbox_pid, "mnt") == {pod_owner(p)}, p.name
        for c in p.containers.values():
            assert owners(c.pid, "mnt") == {pod_owner(p, c.name)}, f"{p.name}/{c.name}"
    user = owners(plain["app"].pid, "user")  # no pod here has a user namespace of its own
    assert user == {HOST} | {pod_owner(p, c) for p in pods.values() for c in ("", *p.containers)}


@pytest.mark.lab
def test_unowned_namespace_is_unknown(pods: dict[str, LabPod]) -> None:
    require_root()
    with running("unshare", "--net", "sleep", "60") as stray:
        wait_for("sleep", lambda: exec_done(stray.pid, b"sleep\0"))
        rows = build_node_map([lab_pod_info(p) for p in pods.values()], procns.read_host())
        row = row_of(rows, stray.pid, "net")
    assert row.owners == (UNKNOWN,)
    assert (row.processes, row.lowest_pid, row.command) == (1, stray.pid, "sleep 60")


@pytest.mark.root
def test_reused_pid_is_never_attributed() -> None:
    """A container PID whose start time is not the one the resolver saw belongs to another process."""
    require_root()
    with running("unshare", "--net", "--mount", "sleep", "60") as proc:
        wait_for("sleep", lambda: exec_done(proc.pid, b"sleep\0"))
        started = procns.start_time(proc.pid)

        def ghost(start_time: int) -> PodInfo:
            return PodInfo("default", "ghost", "ghost-uid", Source.PROC, None,
                           (ContainerInfo("app", "c0ffee", "running", proc.pid, start_time=start_time),))

        def attributed(start_time: int) -> list[NodeNamespace]:
            rows = build_node_map([ghost(start_time)], procns.read_host())
            return [r for r in rows if any(o.pod_name == "ghost" for o in r.owners)]

        right = attributed(started)
        reused = attributed(started + 1)
        unknown_start = attributed(0)
        own = {NamespaceId(t, *ns_ids(proc.pid)[t]) for t in ("net", "mnt")}
    app = Owner("pod", "default", "ghost", "ghost-uid", container="app")
    assert {r.id.type for r in right} == set(NS_TYPES), "control: the true process is attributed everywhere"
    assert all(r.owners == (app,) for r in right if r.id in own), "its fresh namespaces are its alone"
    assert reused == [], "a PID now held by another process must not be attributed"
    assert unknown_start == [], "without a start time the PID cannot be pinned, so it is not attributed"
