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
import random
import signal
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil

from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc
from nsinspect.proto import exec_pb2_grpc
from nsinspect.proto import observe_pb2 as opb
from nsinspect.proto import observe_pb2_grpc as opb_grpc
from nsinspect.proto.rpcerror import rpc_status
from testbed.agentproc import AgentProcess, Samples, agent_process, logged_metrics_url, scrape
from testbed.bench.measure import percentile
from testbed.bench.node import extra_pods, extra_processes, process_count
from testbed.execclient import Result, run, start
from testbed.lab import runtime
from testbed.lab.config import LabConfig
from testbed.lab.pods import Lab
from testbed.reliability.agentstate import describe, fill_pool, max_workers, settled_usage
from testbed.reliability.churn import Forker, PodChurn, lowered_pid_max
from testbed.reliability.truth import Truth, in_pod, pod_truth

log = logging.getLogger(__name__)
CFG = LabConfig(name="reliability", slot=5)
STABLE_NS, CHURN_NS = "bench", "churn"
# Answers a pod that is being created or removed may get: not errors.
PASSING = {"NOT_FOUND", "FAILED_PRECONDITION"}


@dataclass(frozen=True)
class Plan:
    clients: int = 50
    calls: int = 200  # per client
    processes: int = 3000  # on the node in all
    pods: int = 50  # stable lab pods, besides the churning ones
    fork_rate: float = 250.0  # short-lived processes per second (0: none)
    free_pids: int = 4096  # pid_max is lowered until about this many PIDs are free
    churn_lifetime: float = 1.0  # seconds each churning pod lives (0: no pods come and go)
    outage: float = 3.0  # seconds containerd stays dead (0: not killed)
    kill_at: float = 0.3  # share of the calls done when containerd is killed
    workers: int = 10  # client processes (threads in each share its interpreter lock: timings would too)
    think: float = 0.0  # seconds each client waits between calls (0: as fast as answers come)
    mix: tuple[tuple[str, int], ...] = (("Inspect", 6), ("ListProcesses", 3), ("Exec", 1))


@dataclass(frozen=True)
class Answer:
    rpc: str
    pod: str  # namespace/name
    began: float  # time.monotonic(): one clock for every process on the machine
    ms: float
    code: str
    detail: str = ""
    source: int = 0
    # Inspect: (container id, pid, start ticks, ((type, inode), ...)) of every container read.
    read: tuple[tuple[str, int, int, tuple[tuple[str, int], ...]], ...] = ()
    # ListProcesses: how many listed processes were checked in the pod's cgroups, found elsewhere, gone.
    listed: tuple[int, int, int] = (0, 0, 0)


# -- the clients (in worker processes) ------------------------------------------------------------
def _inspect(channel: grpc.Channel, namespace: str, name: str) -> pb.InspectResponse:
    return pb_grpc.AgentStub(channel).Inspect(pb.InspectRequest(pod=pb.PodRef(namespace=namespace, name=name)),
                                              timeout=10)


def _inspected(resp: pb.InspectResponse) -> dict[str, Any]:
    read = tuple((cid, p.pid, p.start_time, tuple((n.type, n.ino) for n in p.namespaces))
                 for cid, p in [(resp.pod.sandbox.id, resp.pod.sandbox.process),
                                *((c.id, c.process) for c in resp.pod.containers)] if not p.gone and p.pid)
    return {"code": "OK", "source": resp.pod.source, "read": read}


def _list(channel: grpc.Channel, namespace: str, name: str) -> opb.ListProcessesResponse:
    return opb_grpc.ObserveStub(channel).ListProcesses(
        opb.ListProcessesRequest(pod=pb.PodRef(namespace=namespace, name=name), cpu_sample_ms=0), timeout=10)


def _listed(resp: opb.ListProcessesResponse) -> dict[str, Any]:
    checked = elsewhere = gone = 0
    for proc in resp.processes:
        if proc.outside:
            continue
        where = in_pod(proc.pid, proc.start_ticks, resp.pod.uid)  # right away: most are still there
        if where is None:
            gone += 1
        elif where:
            checked += 1
        else:
            elsewhere += 1
    return {"code": "OK", "source": resp.pod.source, "listed": (checked, elsewhere, gone)}


def _exec(channel: grpc.Channel, namespace: str, name: str) -> Result:
    return run(exec_pb2_grpc.ExecStub(channel), start(name, "true", namespace=namespace, container="app"),
               timeout=10)


def _executed(result: Result) -> dict[str, Any]:
    ok = result.exit is not None and result.exit.code == 0 and result.started is not None
    return {"code": "OK" if ok else "WRONG_EXIT", "detail": str(result.exit)}


# Each RPC: the call (what is timed), then the check of its answer (not timed: the client's own work).
CALLS: dict[str, tuple[Callable[[grpc.Channel, str, str], Any], Callable[[Any], dict[str, Any]]]] = {
    "Inspect": (_inspect, _inspected), "ListProcesses": (_list, _listed), "Exec": (_exec, _executed)}


def _client(address: str, plan: Plan, stable: list[str], churn_file: str, seed: int,
            done: multiprocessing.Value) -> list[Answer]:  # type: ignore[valid-type]
    rng = random.Random(seed)
    names, weights = zip(*plan.mix, strict=True)
    answers = []
    with grpc.insecure_channel(address) as channel:
        for _ in range(plan.calls):
            rpc = rng.choices(names, weights)[0]
            churning = _churning(churn_file) if rpc != "Exec" and rng.random() < 0.2 else []
            namespace, name = (CHURN_NS, rng.choice(churning)) if churning else (STABLE_NS, rng.choice(stable))
            call, check = CALLS[rpc]
            began = time.monotonic()
            try:
                resp = call(channel, namespace, name)
                ms = (time.monotonic() - began) * 1000
                answers.append(Answer(rpc, f"{namespace}/{name}", began, ms, **check(resp)))
            except grpc.RpcError as err:
                ms = (time.monotonic() - began) * 1000
                code, detail = rpc_status(err)
                answers.append(Answer(rpc, f"{namespace}/{name}", began, ms, code.name if code else "UNKNOWN",
                                      detail[:300]))
            with done.get_lock():  # type: ignore[attr-defined]
                done.value += 1  # type: ignore[attr-defined]
            if plan.think:
                time.sleep(rng.uniform(0.5, 1.5) * plan.think)
    return answers


def _churning(path: str) -> list[str]:
    try:
        return Path(path).read_text().split()
    except OSError:
        return []


def _worker(address: str, plan: Plan, stable: list[str], churn_file: str, seed: int, threads: int) -> list[Answer]:
    """One client process: `threads` clients, each with its own channel."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    with ThreadPoolExecutor(threads) as pool:
        jobs = [pool.submit(_client, address, plan, stable, churn_file, seed * 1000 + i, _DONE) for i in range(threads)]
        return [a for job in jobs for a in job.result()]


_DONE: multiprocessing.Value | None = None  # type: ignore[valid-type]


def _init_worker(done: multiprocessing.Value) -> None:  # type: ignore[valid-type]
    global _DONE  # noqa: PLW0603 - a worker process's share of the progress counter
    _DONE = done
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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


@dataclass
class Outage:
    killed: float = 0.0  # time.monotonic() once containerd's process is gone
    restarting: float = 0.0  # when it is started again: until then nothing can answer for it
    back: float = 0.0  # containerd answering again


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


# -- checking and reporting ------------------------------------------------------------------------
@dataclass
class Report:
    plan: Plan
    answers: list[Answer]
    probe: list[tuple[float, float, str, int]]
    outage: Outage
    truths: dict[str, Truth]
    usage: tuple[dict[str, float], dict[str, float]]  # the agent's, before and after (agentstate.usage)
    churn: dict[str, float]
    node: dict[str, int]
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)

    def in_outage(self, a: Answer) -> bool:
        return bool(self.outage.killed) and self.outage.killed - 1 <= a.began <= self.outage.back + 5

    def errors(self) -> list[Answer]:
        """Answers that are neither OK nor what a churning pod or the outage may get."""
        bad = []
        for a in self.answers:
            if a.code == "OK":
                continue
            if a.pod.startswith(CHURN_NS + "/") and a.code in PASSING:
                continue
            if a.code == "UNAVAILABLE" and self.in_outage(a):
                continue
            bad.append(a)
        return bad

    def misattributed(self) -> tuple[int, int, list[str]]:
        """(checked, unknown, wrong): every container an Inspect answer read, against its truth."""
        checked = unknown = 0
        wrong = []
        for a in self.answers:
            for cid, pid, ticks, namespaces in a.read:
                truth = self.truths.get(cid)
                if truth is None:
                    unknown += 1
                    continue
                checked += 1
                mismatch = [t for t, ino in namespaces if truth.namespaces.get(t) != ino]
                if (pid, ticks) != (truth.pid, truth.start_ticks) or mismatch:
                    wrong.append(f"{a.pod} {cid[:12]}: answered pid {pid}@{ticks} {mismatch}, truth "
                                 f"{truth.pid}@{truth.start_ticks}")
        listed_wrong = sum(a.listed[1] for a in self.answers)
        if listed_wrong:
            wrong.append(f"{listed_wrong} listed processes were not in the pod's cgroups")
        return checked, unknown, wrong

    def outage_figures(self) -> dict[str, float]:
        """When the probe first got an answer after the kill (fallback or UNAVAILABLE), its slowest
        call in the outage, and when CRI answered again for good after containerd was back."""
        if not self.outage.killed:
            return {}
        down = (self.outage.killed, self.outage.restarting)  # nothing could answer for containerd then
        during = [s for s in self.probe if down[0] <= s[0] and s[0] + s[1] / 1000 <= down[1]]
        first = min((s[0] + s[1] / 1000 for s in during), default=float("nan"))
        after = [s for s in self.probe if s[0] >= self.outage.back]
        recovered = float("nan")
        for i, s in enumerate(after):
            if all(x[2] == "OK" and x[3] == pb.SOURCE_CRI for x in after[i:]):
                recovered = s[0] + s[1] / 1000 - self.outage.back
                break
        return {"first answer after the kill (s)": first - self.outage.killed,
                "slowest probe call while down (ms)": max((s[1] for s in during), default=float("nan")),
                "probe answers while down": len(during),
                "from /proc while down": sum(1 for s in during if s[3] == pb.SOURCE_PROC),
                "UNAVAILABLE while down": sum(1 for s in during if s[2] == "UNAVAILABLE"),
                "CRI again after containerd's return (s)": recovered}

    def latency(self) -> dict[str, tuple[int, int, float, float]]:
        """Per RPC: calls, errors, p50 and p99 (ms) of its OK answers."""
        by: dict[str, list[float]] = defaultdict(list)
        errors = Counter(a.rpc for a in self.errors())
        calls = Counter(a.rpc for a in self.answers)
        for a in self.answers:
            if a.code == "OK":
                by[a.rpc].append(a.ms)
        return {rpc: (calls[rpc], errors[rpc], percentile(by[rpc], 50), percentile(by[rpc], 99)) for rpc in calls}

    def targets(self) -> list[tuple[str, float, str, bool]]:
        """(what, figure, target, met) for each of the issue's targets."""
        before, after = self.usage
        inspect_p99 = self.latency().get("Inspect", (0, 0, 0.0, 0.0))[3]
        rows: list[tuple[str, float, str, bool]] = [("errors", len(self.errors()), "0", not self.errors()),
                ("namespaces attributed to the wrong process", len(self.misattributed()[2]), "0",
                 not self.misattributed()[2])]
        if self.plan.think:  # clients that wait for answers and ask at once measure the queue they make
            rows.append(("Inspect p99 (ms)", inspect_p99, "<= 50", inspect_p99 <= 50))
        rows += [
                ("agent RSS growth (MiB)", after["rss_mib"] - before["rss_mib"], "<= 20",
                 after["rss_mib"] - before["rss_mib"] <= 20),
                 ("agent fd growth", after["fds"] - before["fds"], "0", after["fds"] <= before["fds"])]
        if self.outage.killed:
            figures = self.outage_figures()
            first, back = figures["first answer after the kill (s)"], figures["CRI again after containerd's return (s)"]
            rows += [("first answer after containerd died (s)", first, "<= 1", first <= 1),
                     ("CRI answers again after containerd's return (s)", back, "<= 5", back <= 5)]
        return rows

    def ok(self) -> bool:
        return all(met for *_, met in self.targets())

    def text(self) -> str:
        pace = (f"each waiting {self.plan.think:g} s (0.5-1.5x) between calls" if self.plan.think else
                "each asking again as soon as answered: the agent saturated, latency = clients / throughput")
        lines = [f"load: {self.plan.clients} clients x {self.plan.calls} calls, {pace}",
                 f"load: {len(self.answers)} calls in {self.seconds:.1f} s "
                 f"({len(self.answers) / self.seconds:.0f} calls/s) on {self.node['processes']} processes and "
                 f"{self.node['pods']} lab pods",
                 f"{'rpc':<15}{'calls':>7}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}"]
        for rpc, (calls, errors, p50, p99) in sorted(self.latency().items()):
            lines.append(f"{rpc:<15}{calls:>7}{errors:>8}{p50:>9.1f}{p99:>9.1f}")
        codes = Counter(a.code for a in self.answers)
        lines.append("answers by code: " + ", ".join(f"{c} {n}" for c, n in codes.most_common()))
        for a in self.errors()[:5]:
            lines.append(f"  error: {a.rpc} {a.pod} {a.code} {a.detail}")
        checked, unknown, wrong = self.misattributed()
        lines.append(f"checked against independent reads: {checked} container answers, "
                     f"{sum(a.listed[0] for a in self.answers)} listed processes; wrong: {len(wrong)}"
                     f" (unchecked: {unknown} answers for containers without a truth, "
                     f"{sum(a.listed[2] for a in self.answers)} processes gone before the check)")
        lines.extend(f"  WRONG: {w}" for w in wrong[:5])
        lines.append("agent before -> after: " + describe(*self.usage))
        cpu = self.usage[1]["cpu_s"] - self.usage[0]["cpu_s"]
        lines.append(f"agent CPU: {cpu:.1f} s for {len(self.answers)} calls ({cpu / self.seconds * 100:.0f}% of one "
                     f"CPU; {cpu / max(len(self.answers), 1) * 1000:.1f} ms a call)")
        lines.append("churn: " + ", ".join(f"{k} {v:g}" for k, v in self.churn.items()))
        for k, v in self.outage_figures().items():
            lines.append(f"outage: {k}: {v:.3f}" if isinstance(v, float) else f"outage: {k}: {v}")
        for k, v in self.metrics.items():
            lines.append(f"metrics: {k}: {v:g}")
        lines.append("targets:")
        lines.extend(f"  {what:<50}{figure:>10.3g}  {target:<6} {'met' if met else 'MISSED'}"
                     for what, figure, target, met in self.targets())
        return "\n".join(lines)


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
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(done,)) as pool:
        jobs = [pool.submit(_worker, address, plan, stable, churn_file, i + 1, n) for i, n in enumerate(shares)]
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
