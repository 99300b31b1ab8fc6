"""CLI start-up (`hack/bench cli`): the installed `nsinspect` program, started afresh each time, against
the same interpreter doing nothing (`python -c pass`) and importing grpc alone (what any gRPC client
pays). Two commands: `--help` (which must not import anything heavy), and a real `ns` call answered
by the run's agent over its unix socket (imports, the call, JSON output)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from testbed.bench.measure import median_ms
from testbed.bench.node import Sizes, Target
from testbed.bench.table import Row

PASS = "python -c pass"
GRPC = 'python -c "import grpc"'


def program() -> str:
    return str(Path(sys.executable).parent / "nsinspect")


def started(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rows(target: Target, sizes: Sizes) -> list[Row]:
    runs = sizes.cli_runs
    python = target.once(PASS, lambda: median_ms(lambda: started([sys.executable, "-c", "pass"]), runs, warmup=2))
    grpc = target.once(GRPC, lambda: median_ms(lambda: started([sys.executable, "-c", "import grpc"]), runs,
                                               warmup=2))
    helped = median_ms(lambda: started([program(), "--help"]), runs, warmup=2)
    pod = target.inspect_pod
    ns = median_ms(lambda: started([program(), "ns", "--agent", target.agent, "-n", pod.namespace, pod.name,
                                    "-o", "json"]), runs, warmup=2)
    real = f"CLI: nsinspect ns {pod.name} -o json via the agent, median of {runs}"
    return [
        Row(f"CLI start-up: nsinspect --help, median of {runs}", helped, PASS, python, target="<= 300 ms",
            met=helped <= 300),
        Row(real, ns, PASS, python),
        Row(real, ns, GRPC, grpc),
    ]


if __name__ == "__main__":
    from testbed.bench.__main__ import main
    sys.exit(main(["cli", *sys.argv[1:]]))
