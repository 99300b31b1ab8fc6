"""The machine a benchmark ran on, read from the machine itself: what docs/benchmarks.md prints beside
the figures so that they can be compared with a run elsewhere."""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import subprocess
from pathlib import Path

import grpc

from nsinspect.agent.procfs import procns
from nsinspect.agent.resolve.cri import CriClient
from testbed.bench.node import process_count

Facts = list[tuple[str, str]]


def _first_line(argv: list[str]) -> str:
    if not shutil.which(argv[0]):
        return f"{argv[0]} not found"
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unknown ({err})"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "unknown"


def _field(path: str, key: str, sep: str = ":") -> str:
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(sep)
            if name.strip() == key:
                return value.strip().strip('"')
    except OSError:
        pass
    return "unknown"


def cpu() -> str:
    model = _field("/proc/cpuinfo", "model name")
    if model == "unknown":
        model = platform.processor() or platform.machine()
    return f"{model} ({platform.machine()})"


def memory() -> str:
    kib = _field("/proc/meminfo", "MemTotal").split()
    return f"{int(kib[0]) / (1 << 20):.1f} GiB" if kib and kib[0].isdigit() else "unknown"


def runtime(endpoint: str) -> tuple[str, int]:
    """The runtime's name and version as it tells CRI, and how many pod sandboxes it runs."""
    try:
        with CriClient(endpoint) as client:
            version = client.version()
            return f"{version.runtime_name} {version.runtime_version} (CRI {version.runtime_api_version})", \
                len(client.list_sandboxes())
    except Exception as err:  # a description, never a failure
        return f"unknown ({err})", 0


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def describe(endpoint: str, mode: str) -> Facts:
    """Everything but the end of the run (see `finish`)."""
    containerd, pods = runtime(endpoint)
    return [
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("node", mode),
        ("CPU", cpu()),
        ("cores", f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable by the run)"),
        ("memory", memory()),
        ("kernel", platform.release()),
        ("distribution", _field("/etc/os-release", "PRETTY_NAME", "=")),
        ("cgroup mode", procns.cgroup_mode()),
        ("runtime (CRI endpoint)", f"{containerd} at {endpoint}"),
        ("runc", _first_line(["runc", "--version"])),
        ("lsns", _first_line(["lsns", "--version"])),
        ("python", f"{platform.python_implementation()} {platform.python_version()}, grpcio {grpc.__version__}"),
        ("processes during the run", f"{process_count():,}"),
        ("pods during the run", f"{pods} (all the runtime's sandboxes)"),
        ("commit", _first_line(["git", "-C", str(Path(__file__).parents[2]), "describe", "--always", "--dirty"])),
        ("load average (1, 5, 15 min) at the start", load()),
    ]


def finish(facts: Facts, seconds: float) -> Facts:
    return [*facts, ("load average at the end", load()), ("run time", f"{seconds:.0f} s")]
