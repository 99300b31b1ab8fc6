"""What the agent holds, read from outside: memory, fds, threads, child processes; what the
sessions left behind; and a way to grow its worker pool to the size the runs need, so that later
thread counts say something about leaks."""

from __future__ import annotations

import time

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nsinspect.agent.server.admission import RESERVED_WORKERS, Limits
from nsinspect.proto import exec_pb2_grpc
from testbed.execclient import Live, start


def usage(pid: int) -> dict[str, float]:
    proc = psutil.Process(pid)
    cpu = proc.cpu_times()
    return {"rss_mib": proc.memory_info().rss / 2**20, "fds": proc.num_fds(), "threads": proc.num_threads(),
            "children": len(proc.children(recursive=True)), "cpu_s": cpu.user + cpu.system}


def describe(before: dict[str, float], after: dict[str, float]) -> str:
    return ", ".join(f"{k} {before[k]:.1f} -> {after[k]:.1f}" if k in ("rss_mib", "cpu_s") else
                     f"{k} {before[k]:.0f} -> {after[k]:.0f}" for k in before)


def marked(durations: range) -> list[psutil.Process]:
    """Live `sleep N` processes with N in `durations`: what test sessions start, found by argv alone."""
    wanted = {str(n) for n in durations}
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        argv = proc.info["cmdline"] or []
        if len(argv) == 2 and argv[0].endswith("sleep") and argv[1] in wanted and proc.info["status"] != "zombie":
            found.append(proc)
    return found


def max_workers(sessions: int) -> str:
    """The agent's --max-workers for --max-sessions `sessions`: the fewest it accepts."""
    return str(sessions + Limits().total + RESERVED_WORKERS)


def fill_pool(address: str, pod: str, sessions: int, duration: int, namespace: str = "default") -> None:
    """Grow the agent's gRPC worker pool to sessions + 1 threads, more calls than a run makes at
    once: every session holds a worker, a health check one more. The pool's threads never go away."""
    with grpc.insecure_channel(address) as channel:
        stub = exec_pb2_grpc.ExecStub(channel)
        lives = [Live(stub, start(pod, "sleep", str(duration), namespace=namespace)) for _ in range(sessions)]
        for live in lives:
            live.wait_started()
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        for live in lives:
            live.cancel()


def settled_usage(pid: int, sessions: range = range(0), timeout: float = 10.0) -> dict[str, float]:
    """`usage` once the sessions' marked processes are gone and the fd count holds still for
    0.3 s: a session the client cut, or a connection it closed, is torn down a moment later."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        fds = psutil.Process(pid).num_fds()
        if fds == last and not marked(sessions):
            break
        last = fds
        time.sleep(0.3)
    return usage(pid)
