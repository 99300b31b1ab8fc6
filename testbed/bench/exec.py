"""Exec through the agent against nsenter (`hack/bench exec`), on the same container in the same run.

- latency of `true` through the agent over gRPC on a unix socket (start to end of stream, i.e.
  including teardown), with the pre-started fork-server helper and with a helper spawned per
  session, against `nsenter -t PID -a true`;
- streaming throughput of stdout (dd with 1 MiB writes, and head with 4 KiB ones (busybox), in the
  container, counted at the client), against the same command through nsenter into a pipe;
- on the lab only: how long after a client cancels until the session's processes are gone (it waits
  until the pod's pid namespace holds its init alone, so it needs a pod of its own).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import psutil

from nsinspect.proto import exec_pb2 as pb
from nsinspect.proto import exec_pb2_grpc as pb_grpc
from testbed.bench.measure import percentile, timings
from testbed.bench.node import Sizes, Target
from testbed.bench.table import Row, skipped
from testbed.execclient import Live, run, start

NSENTER = "nsenter -a true"
PIPE = "nsenter into a pipe"
PRODUCERS: dict[str, Callable[[int], list[str]]] = {  # 1 MiB writes, and 4 KiB ones (busybox head is slow alone)
    "dd bs=1M": lambda mib: ["dd", "if=/dev/zero", "bs=1048576", f"count={mib}"],
    "head -c": lambda mib: ["head", "-c", str(mib << 20), "/dev/zero"],
}


def begin(target: Target, *argv: str) -> pb.ExecStart:
    return start(target.exec_pod.name, *argv, namespace=target.exec_pod.namespace, container=target.exec_container)


def true_through(stub: pb_grpc.ExecStub, target: Target) -> None:
    result = run(stub, begin(target, "true"))
    assert result.exit is not None and result.exit.code == 0, result


def nsenter(target: Target, *argv: str) -> bool:
    return subprocess.run(["nsenter", "-t", str(target.exec_pid), "-a", *argv], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def throughput(stub: pb_grpc.ExecStub, target: Target, argv: list[str], size: int) -> float:
    """MiB/s of stdout from the container to this client (counted, not kept)."""
    began, got = time.perf_counter(), 0
    for resp in stub.Exec(iter([pb.ExecRequest(start=begin(target, *argv))])):
        got += len(resp.stdout)
    elapsed = time.perf_counter() - began
    assert got == size, (got, size)
    return size / (1 << 20) / elapsed


def throughput_nsenter(target: Target, argv: list[str], size: int) -> float | None:
    """The same through nsenter, read by this process from a pipe: the baseline (None: it failed)."""
    began, got = time.perf_counter(), 0
    with subprocess.Popen(["nsenter", "-t", str(target.exec_pid), "-a", *argv], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 1 << 20):
            got += len(chunk)
    if proc.returncode != 0 or got != size:
        return None
    return size / (1 << 20) / (time.perf_counter() - began)


def teardown_ms(stub: pb_grpc.ExecStub, target: Target) -> float:
    """Cancel a session with a daemonized child and a background one; until none is left (ms)."""
    init = target.exec_pid
    live = Live(stub, begin(target, "sh", "-c", "(setsid sleep 1001 &); sleep 1002 & echo up; sleep 1003"))
    live.read_until(b"up\n")
    began = time.perf_counter()
    live.call.cancel()
    while any(p.pid != init for p in _pid_ns(init)):
        time.sleep(0.001)
    elapsed = (time.perf_counter() - began) * 1000
    live.close()
    return elapsed


def _pid_ns(init: int) -> list[psutil.Process]:
    inode = Path(f"/proc/{init}/ns/pid").stat().st_ino
    found = []
    for proc in psutil.process_iter():
        try:
            if Path(f"/proc/{proc.pid}/ns/pid").stat().st_ino == inode:
                found.append(proc)
        except OSError:
            continue
    return found


def latency_rows(target: Target, sizes: Sizes) -> list[Row]:
    names = ("Exec true via agent (fork server), median", "Exec true via agent (fork server), p90",
             "Exec true via agent (helper spawned per session), median")
    if not nsenter(target, "true"):
        return [skipped(what, f"container {target.exec_container} has no `true`", NSENTER) for what in names]
    base = statistics.median(timings(lambda: nsenter(target, "true"), sizes.exec_runs, warmup=5))
    with grpc.insecure_channel(target.agent) as channel:
        stub = pb_grpc.ExecStub(channel)
        forkserver = timings(lambda: true_through(stub, target), sizes.exec_runs, warmup=5)
    with target.serve(target.tmp / "spawn.sock", "--exec-helper", "spawn", "--audit-log",
                      str(target.tmp / "spawn.audit")) as address, grpc.insecure_channel(address) as channel:
        stub = pb_grpc.ExecStub(channel)
        spawned = statistics.median(timings(lambda: true_through(stub, target), max(sizes.exec_runs // 4, 3),
                                            warmup=5))
    ours = statistics.median(forkserver)
    return [
        Row(names[0], ours, NSENTER, base, target="<= +10 ms over nsenter", met=ours - base <= 10,
            note=f"overhead {ours - base:+.2f} ms over nsenter"),
        Row(names[1], percentile(forkserver, 90), NSENTER, base),
        Row(names[2], spawned, NSENTER, base, note=f"{spawned / ours:.1f}x the fork server"),
    ]


def throughput_rows(target: Target, sizes: Sizes) -> list[Row]:
    out = []
    size = sizes.mib << 20
    with grpc.insecure_channel(target.agent) as channel:
        stub = pb_grpc.ExecStub(channel)
        for name, command in PRODUCERS.items():
            what = f"Exec stdout throughput, {name}, {sizes.mib} MiB, median of 3"
            first = throughput_nsenter(target, command(sizes.mib), size)
            if first is None:
                out.append(skipped(what, f"`{name}` failed in container {target.exec_container}", PIPE,
                                   ">= 100 MiB/s"))
                continue
            more = (throughput_nsenter(target, command(sizes.mib), size) for _ in range(2))
            base = statistics.median([first, *(b for b in more if b is not None)])
            ours = statistics.median(throughput(stub, target, command(sizes.mib), size) for _ in range(3))
            bound = f"the producer alone reaches {base:.0f} MiB/s through nsenter: it bounds this figure" \
                if base < 100 else ""
            out.append(Row(what, ours, PIPE, base, unit="MiB/s", target=">= 100 MiB/s", met=ours >= 100, note=bound))
    return out


def teardown_rows(target: Target) -> list[Row]:
    what = "Exec cancel -> every session process gone, median of 15"
    if not target.lab:
        return [skipped(what, "needs the lab (a pod of its own: it waits until the pod holds its init alone)",
                        target="< 1000 ms")]
    with grpc.insecure_channel(target.agent) as channel:
        stub = pb_grpc.ExecStub(channel)
        gone = statistics.median(teardown_ms(stub, target) for _ in range(15))
    return [Row(what, gone, target="< 1000 ms", met=gone < 1000, note="no baseline: nsenter has no sessions")]


def rows(target: Target, sizes: Sizes) -> list[Row]:
    return [*latency_rows(target, sizes), *throughput_rows(target, sizes), *teardown_rows(target)]


if __name__ == "__main__":
    from testbed.bench.__main__ import main
    sys.exit(main(["exec", *sys.argv[1:]]))
