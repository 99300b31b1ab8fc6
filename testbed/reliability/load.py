"""The load scenario: many clients mixing Inspect, ListProcesses and short Exec sessions against
the real agent on a busy node, while processes churn with PIDs reused, lab pods come and go, and
containerd is killed and brought back. Every answer is checked against an independent read.

Clients run in a few processes of their own (threads in each), so the load is not limited by one
interpreter's lock. A probe in this process asks every 50 ms throughout, which times the runtime
outage exactly. Answers are kept compact and checked here at the end, against the truths taken
when each container started (testbed/reliability/truth.py).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import psutil

from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc
from nsinspect.proto.rpcerror import rpc_status
from testbed.agentproc import AgentProcess, Samples, agent_process, logged_metrics_url, scrape
from testbed.bench.node import extra_pods, extra_processes, process_count
from testbed.lab import runtime
from testbed.lab.config import LabConfig
from testbed.lab.pods import Lab
from testbed.reliability.agentstate import fill_pool, max_workers, settled_usage
from testbed.reliability.churn import Forker, PodChurn, lowered_pid_max
from testbed.reliability.clients import CALLS, STABLE_NS, Answer, Plan, init_worker, worker
from testbed.reliability.report import Outage, Report
from testbed.reliability.truth import Truth, pod_truth

log = logging.getLogger(__name__)
CFG = LabConfig(name="reliability", slot=5)


# -- the probe and the runtime outage (in this process) -------------------------------------------
class Probe:
    """Inspect of one stable pod every 50 ms while open: `seen` holds (began, ms, code, source)."""

    def __init__(self, address: str, pod: str) -> None:
        self.address, self.pod = address, pod
        self.seen: list[tuple[float, float, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe", daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def until_cri(self, since: float, timeout: float) -> None:
        """Keep probing until answers come from CRI again (for a second) after `since`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recent = [s for s in self.seen if s[0] >= since]
            cri = [s for s in recent if s[2] == "OK" and s[3] == pb.SOURCE_CRI]
            if cri and recent[-1][0] - cri[0][0] >= 1.0 and all(s in cri for s in recent[recent.index(cri[0]):]):
                return
            time.sleep(0.1)

    def _run(self) -> None:
        request = pb.InspectRequest(pod=pb.PodRef(namespace=STABLE_NS, name=self.pod))
        with grpc.insecure_channel(self.address) as channel:
            stub = pb_grpc.AgentStub(channel)
            while not self._stop.wait(0.05):
                began = time.monotonic()
                try:
                    code, source = "OK", int(stub.Inspect(request, timeout=10).pod.source)
                except grpc.RpcError as err:
                    code, source = getattr(rpc_status(err)[0], "name", "UNKNOWN"), 0
                self.seen.append((began, (time.monotonic() - began) * 1000, code, source))


@contextmanager
def _runtime_killed(cfg: LabConfig, plan: Plan, total: int, done: multiprocessing.Value,  # type: ignore[valid-type]
                    outage: Outage) -> Iterator[None]:
    """Once `plan.kill_at` of the calls are done, SIGKILL containerd (as it dies on a node: no
    chance to clean up), and start it again `plan.outage` seconds later."""
    quit_ = threading.Event()

    def kill() -> None:
        while done.value < total * plan.kill_at:  # type: ignore[attr-defined]
            if quit_.wait(0.05):
                return
        pid = runtime.containerd_pid(cfg)
        assert pid is not None, "the lab's containerd is not running"
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(10)
        outage.killed = time.monotonic()
        quit_.wait(plan.outage)
        outage.restarting = time.monotonic()
        runtime.up(cfg)
        outage.back = time.monotonic()
        log.info("containerd was down %.1f s", outage.back - outage.killed)

    killer = threading.Thread(target=kill, name="runtime-killer", daemon=True)
    if plan.outage > 0:
        killer.start()
    try:
        yield
    finally:
        quit_.set()
        if killer.is_alive():
            killer.join(60)
        if outage.killed and not outage.back:  # it was killed but not yet restarted
            outage.restarting = time.monotonic()
            runtime.up(cfg)
            outage.back = time.monotonic()


# -- the scenario ---------------------------------------------------------------------------------------
@contextmanager
def busy_lab(plan: Plan) -> Iterator[tuple[LabConfig, list[str], dict[str, Truth]]]:
    """The scenario's own lab instance (never the main lab: containerd is killed) with the stable
    pods and the idle processes; torn down afterwards."""
    runtime.up(CFG)
    try:
        with Lab(CFG) as lab, extra_pods(lab, plan.pods) as pods:
            truths = {cid: t for pod in pods for cid, t in pod_truth(CFG, pod).items()}
            with extra_processes(plan.processes - process_count()):
                yield CFG, [p.name for p in pods], truths
    finally:
        runtime.down(CFG, purge=True)


def run_load(plan: Plan, workdir: Path) -> Report:
    with ExitStack() as stack:
        cfg, stable, truths = stack.enter_context(busy_lab(plan))
        node = {"processes": process_count(), "pods": len(stable)}
        sessions = plan.clients + 1  # every client may run one, and the probe asks too
        agent: AgentProcess = stack.enter_context(agent_process(
            cfg, workdir / "agent.sock", "--max-workers", max_workers(sessions), "--max-sessions", str(sessions),
            "--metrics-listen", "127.0.0.1:0", "--audit-log", str(workdir / "audit.log"), log=workdir / "agent.log"))
        url = logged_metrics_url(workdir / "agent.log")
        churn_file = workdir / "churning"
        churn_file.write_text("")
        _warm_up(agent.address, stable)
        fill_pool(agent.address, stable[0], sessions, 3600, namespace=STABLE_NS)
        before, counted = settled_usage(agent.process.pid), scrape(url)

        total = plan.clients * plan.calls
        done = multiprocessing.get_context("spawn").Value("l", 0)
        outage = Outage()
        with Probe(agent.address, stable[0]) as probe:
            began = time.monotonic()
            with lowered_pid_max(_pid_max_for(plan.free_pids)) as pid_max, Forker(plan.fork_rate) as forker, \
                    PodChurn(cfg, plan.churn_lifetime) as pods, _runtime_killed(cfg, plan, total, done, outage), \
                    _published(pods, churn_file):
                answers = _drive(agent.address, plan, stable, str(churn_file), done)
                seconds = time.monotonic() - began
            if outage.back:
                probe.until_cri(since=outage.back, timeout=15)
        assert agent.process.poll() is None, f"the agent died: exit {agent.process.returncode}"
        after = settled_usage(agent.process.pid)
        churn: dict[str, float] = {"short-lived processes": forker.made,
                                   "per second": round(forker.made / max(forker.seconds, 0.001)),
                                   "pid wraps": forker.wraps, "pid_max": pid_max, "pods created": pods.created,
                                   "pods removed": pods.removed}
        return Report(plan, answers, probe.seen, outage, {**truths, **pods.truths}, (before, after), churn, node,
                      seconds, metric_deltas(counted, scrape(url)))


def metric_deltas(before: Samples, after: Samples) -> dict[str, float]:
    """What the agent counted during the load, by the names the report prints."""
    out: dict[str, float] = {}
    for (name, labels), value in sorted(after.items()):
        change = value - before.get((name, labels), 0.0)
        tags = dict(labels)
        if name == "nsinspect_rpc_total" and change and not tags["method"].startswith("/grpc.health"):
            out[f"rpc {tags['method'].rsplit('/', 1)[-1]} {tags['code']}"] = change
        elif name in ("nsinspect_resolutions_total", "nsinspect_runtime_errors_total") and change:
            out[f"{name.removeprefix('nsinspect_').removesuffix('_total')} {'/'.join(tags.values())}"] = change
        elif name == "nsinspect_authz_decisions_total" and change:
            out[f"authz {tags['rpc']} {tags['decision']}"] = change
        elif name == "nsinspect_exec_sessions_active":
            out["exec sessions active after"] = value
    return out


def _drive(address: str, plan: Plan, stable: list[str], churn_file: str,
           done: multiprocessing.Value) -> list[Answer]:  # type: ignore[valid-type]
    workers = max(1, min(plan.workers, plan.clients))
    shares = [plan.clients // workers + (1 if i < plan.clients % workers else 0) for i in range(workers)]
    context = multiprocessing.get_context("spawn")  # grpc must not be forked
    with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker, initargs=(done,)) as pool:
        jobs = [pool.submit(worker, address, plan, stable, churn_file, i + 1, n) for i, n in enumerate(shares)]
        return [a for job in jobs for a in job.result()]


def _warm_up(address: str, stable: list[str]) -> None:
    """One call of each kind, so the agent's caches and helpers exist before `before` is taken."""
    with grpc.insecure_channel(address) as channel:
        for name in stable[:3]:
            for call, check in CALLS.values():
                check(call(channel, STABLE_NS, name))


@contextmanager
def _published(pods: PodChurn, path: Path) -> Iterator[None]:
    """The churning pods' names in `path` (rewritten atomically every 100 ms), for the clients."""
    quit_ = threading.Event()

    def publish() -> None:
        tmp = path.with_suffix(".tmp")
        while not quit_.wait(0.1):
            tmp.write_text("\n".join(pods.names()))
            tmp.replace(path)

    thread = threading.Thread(target=publish, name="publisher", daemon=True)
    thread.start()
    try:
        yield
    finally:
        quit_.set()
        thread.join(5)


def _pid_max_for(free: int) -> int:
    """The lowest pid_max that leaves about `free` PIDs unused below it."""
    used = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    limit = 512
    while limit - 300 - sum(1 for pid in used if pid < limit) < free:  # the kernel hands out PIDs from 300
        limit += 128
    return limit


def main(plan: Plan) -> Report:
    with tempfile.TemporaryDirectory(prefix="nsinspect-load-") as tmp:
        return run_load(plan, Path(tmp))
