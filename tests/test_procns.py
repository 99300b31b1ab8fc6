"""Namespace reads are attributed to the right process, or to none: vanished and reused PIDs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nsinspect.agent.core.model import NS_TYPES
from nsinspect.agent.procfs import procns
from tests.conftest import require_root
from tests.nsread import host_pid, ns_ids


def test_reads_match_an_independent_reader() -> None:
    mine = procns.read_namespaces(os.getpid())
    assert not mine.gone and mine.start_time == procns.start_time(os.getpid())
    assert {t: (n.dev, n.ino) for t, n in mine.ids.items()} == ns_ids(os.getpid())


def test_a_pid_that_never_existed_is_gone() -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    free = next(p for p in range(pid_max - 1, 1, -1) if not Path(f"/proc/{p}").exists())
    result = procns.read_namespaces(free)
    assert result.gone and not result.ids
    with pytest.raises(ProcessLookupError):
        procns.start_time(free)


def test_a_zombie_is_gone() -> None:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while procns.read_namespaces(child.pid).ids and time.monotonic() < deadline:
        time.sleep(0.01)  # until it has exited (but is not reaped yet)
    result = procns.read_namespaces(child.pid)
    child.wait()
    assert result.gone and not result.ids


@contextlib.contextmanager
def _process_with_pid(pid: int, argv: list[str]) -> Iterator[subprocess.Popen[bytes] | None]:
    """Start `argv` so that it gets `pid`, by setting ns_last_pid (root only); None if others raced us."""
    last = Path("/proc/sys/kernel/ns_last_pid")
    started: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(50):
            last.write_text(str(pid - 1))
            proc = subprocess.Popen(argv)
            if proc.pid == pid:
                started = proc
                break
            proc.kill()
            proc.wait()
        yield started
    finally:
        if started:
            started.kill()
            started.wait()


def test_a_reused_pid_is_never_attributed() -> None:
    require_root()
    old = subprocess.Popen(["sleep", "60"])
    pid, started = old.pid, procns.start_time(old.pid)
    time.sleep(0.02)  # start times are in clock ticks: make sure the successor's differs
    old.kill()
    old.wait()
    with _process_with_pid(pid, ["unshare", "--net", "--uts", "sleep", "60"]) as successor:
        assert successor is not None, "could not make the kernel reuse the PID"
        time.sleep(0.1)  # let unshare exec sleep
        stale = procns.read_namespaces(pid, expect_start=started)
        assert stale.gone and not stale.ids and "another process" in stale.error
        fresh = procns.read_namespaces(pid)
        assert not fresh.gone and fresh.ids["net"] != procns.read_namespaces(host_pid()).ids["net"]


def test_host_reference_holds_the_initial_namespaces() -> None:
    host = procns.read_host()
    assert host.namespaces.pid in (1, 2) and set(host.namespaces.ids) == set(NS_TYPES)
    assert host.cgroup_mode in ("v1", "hybrid", "v2")
