"""Run the real `nsinspect-agent` as a subprocess for a test, and stop it afterwards."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.lab.config import LabConfig


@contextmanager
def running_agent(cfg: LabConfig, sock: Path, *extra: str, log: Path | None = None,
                  kubeconfig: Path | None = None) -> Iterator[str]:
    """The agent serving `cfg`'s lab on a unix socket (and whatever `extra` adds); yields that
    address once healthy. `kubeconfig`: the API server it verifies TCP callers with (its
    --kubeconfig, e.g. the stand-in's `cluster.kubeconfig(path, "agent-token")`)."""
    address = f"unix://{sock}"
    argv = [sys.executable, "-m", "nsinspect.agent.main", "--listen", address, "--cri-endpoint", cfg.endpoint,
            "--runtime-state-dir", str(cfg.state), "--node-name", "lab-node", *extra,
            *(("--kubeconfig", str(kubeconfig)) if kubeconfig else ())]
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(argv, stdout=out, stderr=out)
    try:
        _wait_healthy(address, proc)
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


def _wait_healthy(address: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
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
