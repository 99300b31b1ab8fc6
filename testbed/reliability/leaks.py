"""Many Exec sessions, half of them cut off by the client (the call cancelled, or the connection
dropped without a word), then a count of what is left: processes, zombies, the agent's fds and
threads. Each cut session runs a shell that starts a background child and waits, so a cut that
leaves anything behind shows."""

from __future__ import annotations

import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil

from nsinspect.proto import exec_pb2_grpc
from testbed.agentproc import agent_process
from testbed.execclient import Live, run, start
from testbed.lab.config import LabConfig
from testbed.reliability.agentstate import describe, fill_pool, marked, max_workers, settled_usage

MARK = 5171  # every cut session's processes sleep 5171 or 5172 seconds
SLEEPS = range(MARK, MARK + 2)


@dataclass
class Leaks:
    sessions: int
    cut: int
    failed: list[str]
    before: dict[str, float]  # the agent's rss_mib, fds, threads after a warm-up
    after: dict[str, float]
    left: int  # marked processes still alive
    zombies: list[str]  # zombies that were not there before and stay
    seconds: float

    def ok(self) -> bool:
        grown = [k for k in ("fds", "threads", "children") if self.after[k] > self.before[k]]
        return not self.failed and self.left == 0 and not self.zombies and not grown

    def text(self) -> str:
        return (f"leaks: {self.sessions} sessions ({self.cut} cut by the client) in {self.seconds:.1f} s; "
                f"failed {len(self.failed)}; processes left {self.left}; new zombies {len(self.zombies)}; agent "
                + describe(self.before, self.after)
                + "".join(f"\n  failed: {f}" for f in self.failed[:5])
                + "".join(f"\n  zombie: {z}" for z in self.zombies[:5]))


def zombies() -> set[tuple[int, float, str]]:
    found = set()
    for proc in psutil.process_iter(["status", "create_time", "name", "ppid"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            what = f"{proc.info['name']} (pid {proc.pid}, parent {proc.info['ppid']})"
            found.add((proc.pid, proc.info["create_time"], what))
    return found


def one(address: str, pod: str, number: int) -> str:
    """Session `number`: even ones run to the end, odd ones are cut (cancelled, or the channel
    closed under them) once their processes run. "" when it went as it should."""
    with grpc.insecure_channel(address) as channel:
        stub = exec_pb2_grpc.ExecStub(channel)
        if number % 2 == 0:
            result = run(stub, start(pod, "echo", str(number)), timeout=30)
            if result.stdout != f"{number}\n".encode() or result.exit is None or result.exit.code != 0:
                return f"session {number}: {result.stdout!r} {result.exit}"
            return ""
        live = Live(stub, start(pod, "sh", "-c", f"sleep {MARK} & echo running; exec sleep {MARK + 1}"))
        live.read_until(b"running")
        if number % 4 == 1:
            live.cancel()
        else:  # the connection goes with no cancel, as when a client dies
            channel.close()
            live.close()
    return ""


def leak_check(cfg: LabConfig, pod: str, sessions: int, workdir: Path, concurrency: int = 8) -> Leaks:
    sessions_max = 2 * concurrency + 1
    with agent_process(cfg, workdir / "agent.sock", "--max-sessions", str(sessions_max),
                       "--max-workers", max_workers(sessions_max),
                       "--audit-log", str(workdir / "audit.log"), log=workdir / "agent.log") as agent:
        failed: list[str] = []
        lock = threading.Lock()

        def session(number: int) -> None:
            try:
                problem = one(agent.address, pod, number)
            except Exception as err:  # reported, not raised: the count is the result
                problem = f"session {number}: {type(err).__name__}: {err}"
            if problem:
                with lock:
                    failed.append(problem)

        with ThreadPoolExecutor(concurrency) as pool:  # warm-up: the helper's enterers, the caches
            list(pool.map(session, range(-8 * concurrency, 0)))
        settled_usage(agent.process.pid, SLEEPS)
        fill_pool(agent.address, pod, sessions_max, MARK)
        before, zombies_before = settled_usage(agent.process.pid, SLEEPS), zombies()
        began = time.monotonic()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(session, range(sessions)))
        seconds = time.monotonic() - began
        after = settled_usage(agent.process.pid, SLEEPS)
        left = len(marked(SLEEPS))
        new = zombies() - zombies_before
        time.sleep(0.5)
        lasting = sorted(z[2] for z in new & zombies())  # a zombie being reaped right now is no leak
        alive = agent.process.poll() is None
    for proc in marked(SLEEPS):
        proc.kill()
    if not alive:
        failed.append("the agent died")
    return Leaks(sessions, sessions // 2, failed, before, after, left, lasting, seconds)


def main(cfg: LabConfig, pod: str, sessions: int) -> Leaks:
    with tempfile.TemporaryDirectory(prefix="nsinspect-leaks-") as tmp:
        return leak_check(cfg, pod, sessions, Path(tmp))
