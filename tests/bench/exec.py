"""`.venv/bin/python -m tests.bench.exec [--runs N]`: exec through the agent against nsenter, in one run.

- latency of `true` through the agent over gRPC on a unix socket (start to end of stream, i.e.
  including teardown), with the pre-started fork-server helper and with a helper spawned per
  session, against `nsenter -t PID -a true` on the same container;
- streaming throughput of stdout (dd with 1 MiB writes, and busybox head with 4 KiB ones, in the
  container, counted at the client), against the same command through nsenter into a pipe;
- how long after a client cancels until the session's processes are gone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import psutil

from nsinspect.proto import exec_pb2 as pb
from nsinspect.proto import exec_pb2_grpc as pb_grpc
from tests import toolbox
from tests.agentproc import running_agent
from tests.execclient import Live, run, start
from tests.lab import runtime
from tests.lab.config import LabConfig
from tests.lab.pods import ContainerSpec, Lab, PodSpec

POD = "bench-exec"


def timings(fn: Callable[[], object], runs: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        out.append((time.perf_counter() - began) * 1000)
    return out


def p90(values: list[float]) -> float:
    return sorted(values)[len(values) * 9 // 10]


def true_through(stub: pb_grpc.ExecStub) -> None:
    result = run(stub, start(POD, "true"))
    assert result.exit is not None and result.exit.code == 0


PRODUCERS: dict[str, Callable[[int], list[str]]] = {  # 1 MiB writes, and 4 KiB ones (busybox head is slow alone)
    "dd bs=1M": lambda mib: ["dd", "if=/dev/zero", "bs=1048576", f"count={mib}"],
    "head -c": lambda mib: ["head", "-c", str(mib << 20), "/dev/zero"],
}


def throughput(stub: pb_grpc.ExecStub, argv: list[str], size: int) -> float:
    """MiB/s of stdout from the container to this client (counted, not kept)."""
    began, got = time.perf_counter(), 0
    requests = iter([pb.ExecRequest(start=start(POD, *argv))])
    for resp in stub.Exec(requests):
        got += len(resp.stdout)
    elapsed = time.perf_counter() - began
    assert got == size, (got, size)
    return size / (1 << 20) / elapsed


def throughput_nsenter(init: int, argv: list[str], size: int) -> float:
    """The same through nsenter, read by this process from a pipe: the baseline."""
    began, got = time.perf_counter(), 0
    with subprocess.Popen(["nsenter", "-t", str(init), "-a", *argv], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 1 << 20):
            got += len(chunk)
    assert got == size, (got, size)
    return size / (1 << 20) / (time.perf_counter() - began)


def teardown_ms(stub: pb_grpc.ExecStub, init: int) -> float:
    """Cancel a session with a daemonized child and a background one; until none is left (ms)."""
    live = Live(stub, start(POD, "sh", "-c", "(setsid sleep 1001 &); sleep 1002 & echo up; sleep 1003"))
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.exec", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=200, help="calls per latency figure (the spawned helper: a quarter)")
    p.add_argument("--mib", type=int, default=1024, help="MiB of stdout for the throughput figure")
    args = p.parse_args(argv)

    cfg = LabConfig()
    runtime.up(cfg)
    box = toolbox.build(toolbox.default_dir(cfg))
    rows: list[tuple[str, str]] = []
    with Lab(cfg) as lab, lab.pod(PodSpec(POD, (ContainerSpec("app"),))) as pod, \
            tempfile.TemporaryDirectory() as tmp:
        init = pod["app"].pid
        nsenter = timings(lambda: subprocess.run(["nsenter", "-t", str(init), "-a", "true"], check=True),
                          args.runs)
        figures: dict[str, list[float]] = {}
        mib_s: dict[str, float] = {}
        base_mib_s: dict[str, float] = {}
        for mode, runs in (("forkserver", args.runs), ("spawn", max(args.runs // 4, 20))):
            sock = Path(tmp) / f"{mode}.sock"
            with running_agent(cfg, sock, "--exec-helper", mode, "--toolbox", str(box), "--audit-log",
                               str(Path(tmp) / f"{mode}.audit")) as address, \
                    grpc.insecure_channel(address) as channel:
                stub = pb_grpc.ExecStub(channel)
                figures[mode] = timings(lambda s=stub: true_through(s), runs)  # type: ignore[misc]
                if mode == "forkserver":
                    for name, command in PRODUCERS.items():
                        mib_s[name] = statistics.median(throughput(stub, command(args.mib), args.mib << 20)
                                                        for _ in range(3))
                        base_mib_s[name] = statistics.median(
                            throughput_nsenter(init, command(args.mib), args.mib << 20) for _ in range(3))
                    gone = statistics.median(teardown_ms(stub, init) for _ in range(15))
        base = statistics.median(nsenter)
        ours = statistics.median(figures["forkserver"])
        spawned = statistics.median(figures["spawn"])
        rows += [
            ("nsenter -t PID -a true, median", f"{base:.2f} ms"),
            ("exec true via agent (fork server), median", f"{ours:.2f} ms  (overhead {ours - base:+.2f} ms, "
                                                          f"target <= 10 ms)"),
            ("exec true via agent (fork server), p90", f"{p90(figures['forkserver']):.2f} ms"),
            ("exec true via agent (helper spawned per session), median", f"{spawned:.2f} ms  "
                                                                         f"({spawned / ours:.1f}x the fork server)"),
            *((f"stdout throughput, {name}, median of 3",
               f"{mib_s[name]:.0f} MiB/s  (nsenter into a pipe: {base_mib_s[name]:.0f} MiB/s; target >= 100 MiB/s)")
              for name in PRODUCERS),
            ("cancel -> every session process gone, median of 15", f"{gone:.1f} ms  (requirement < 1000 ms)"),
        ]
    width = max(len(r[0]) for r in rows)
    print(f"node: {psutil.cpu_count()} CPUs, {len(psutil.pids())} processes")
    for what, figure in rows:
        print(f"{what.ljust(width)}  {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
