"""Run the real `nsinspect-agent` as a subprocess for a test, stop it afterwards, and read what it
exposes (its metrics endpoint)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from testbed.lab.config import LabConfig

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def free_port() -> int:
    """A loopback TCP port nobody listens on now (for an agent's, or a stand-in's, --listen)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class AgentProcess:
    address: str  # its unix socket, as grpc takes it
    process: subprocess.Popen[bytes]
    argv: tuple[str, ...]  # to start it again the same way


def agent_argv(cfg: LabConfig, sock: Path, *extra: str, kubeconfig: Path | None = None) -> tuple[str, ...]:
    return (sys.executable, "-m", "nsinspect.agent.main", "--listen", f"unix://{sock}", "--cri-endpoint", cfg.endpoint,
            "--runtime-state-dir", str(cfg.state), "--node-name", "lab-node", *extra,
            *(("--kubeconfig", str(kubeconfig)) if kubeconfig else ()))


@contextmanager
def agent_process(cfg: LabConfig, sock: Path, *extra: str, log: Path | None = None,
                  kubeconfig: Path | None = None) -> Iterator[AgentProcess]:
    """The agent serving `cfg`'s lab on a unix socket (and whatever `extra` adds), once healthy;
    stopped (SIGTERM, then SIGKILL) afterwards. `kubeconfig`: the API server it verifies TCP
    callers with (its --kubeconfig, e.g. the stand-in's `cluster.kubeconfig(path, "agent-token")`)."""
    argv = agent_argv(cfg, sock, *extra, kubeconfig=kubeconfig)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(argv, stdout=out, stderr=out)
    try:
        try:
            wait_healthy(f"unix://{sock}", proc)
        except RuntimeError as err:
            if log:
                raise RuntimeError(f"{err}: {log.read_text(errors='replace')[-2000:]}") from None
            raise
        yield AgentProcess(f"unix://{sock}", proc, argv)
    finally:
        stop(proc)
        if log:
            out.close()  # type: ignore[union-attr]


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running_agent(cfg: LabConfig, sock: Path, *extra: str, log: Path | None = None,
                  kubeconfig: Path | None = None) -> Iterator[str]:
    """`agent_process`, for tests that need only its address."""
    with agent_process(cfg, sock, *extra, log=log, kubeconfig=kubeconfig) as agent:
        yield agent.address


def wait_healthy(address: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the agent exited with {proc.returncode}")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.05)
    raise RuntimeError("the agent did not become healthy")


def logged_metrics_url(log: Path, timeout: float = 10.0) -> str:
    """The endpoint from the agent's "agent serving" line (written just after it starts serving)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and (entry := json.loads(line)).get("msg") == "agent serving":
                return str(entry["metrics"])
        time.sleep(0.05)
    raise AssertionError(f"no 'agent serving' line in {log}")


def scrape(url: str) -> Samples:
    """Every sample the agent's metrics endpoint serves: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}
