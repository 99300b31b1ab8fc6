"""The load scenario's clients: what each call asks and what of its answer is kept (compactly, to be
checked at the end against the truths), run in worker processes with threads in each."""

from __future__ import annotations

import multiprocessing
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc
from nsinspect.proto import exec_pb2_grpc
from nsinspect.proto import observe_pb2 as opb
from nsinspect.proto import observe_pb2_grpc as opb_grpc
from nsinspect.proto.rpcerror import rpc_status
from testbed.execclient import Result, run, start
from testbed.reliability.truth import in_pod

STABLE_NS, CHURN_NS = "bench", "churn"



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


def worker(address: str, plan: Plan, stable: list[str], churn_file: str, seed: int, threads: int) -> list[Answer]:
    """One client process: `threads` clients, each with its own channel."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    with ThreadPoolExecutor(threads) as pool:
        jobs = [pool.submit(_client, address, plan, stable, churn_file, seed * 1000 + i, _DONE) for i in range(threads)]
        return [a for job in jobs for a in job.result()]


_DONE: multiprocessing.Value | None = None  # type: ignore[valid-type]


def init_worker(done: multiprocessing.Value) -> None:  # type: ignore[valid-type]
    global _DONE  # noqa: PLW0603 - a worker process's share of the progress counter
    _DONE = done
    signal.signal(signal.SIGINT, signal.SIG_IGN)
