"""`hack/bench [inspect|nodemap|ps|exec|cli|all ...]`: every benchmark in one run on one node, one table.

Each row is our figure, the baseline a user would otherwise run measured in the same run, the ratio,
the target and whether it is met. By default the node is generated: the lab (brought up if needed)
with thousands of idle processes and dozens of pods, removed afterwards. On a real node, `--node`
uses its own runtime and one existing pod instead, generating nothing:

    hack/bench --node --cri-endpoint unix:///run/containerd/containerd.sock --pod NAMESPACE/NAME

`--write-docs` stores the table with a description of the machine in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from nsinspect.agent.core.model import PodRef
from nsinspect.agent.resolve.cri import find_endpoint
from nsinspect.agent.resolve.proc_source import DEFAULT_STATE_DIRS
from testbed.bench import cli, machine, ns, ps
from testbed.bench import exec as exec_bench
from testbed.bench.node import Sizes, Target, lab_node, real_node, say
from testbed.bench.table import Row, markdown, text

PARTS: dict[str, Callable[[Target, Sizes], list[Row]]] = {
    "inspect": ns.inspect_rows,
    "nodemap": ns.nodemap_rows,
    "ps": ps.rows,
    "exec": exec_bench.rows,
    "cli": cli.rows,
}
DOCS = Path(__file__).parents[2] / "docs" / "benchmarks.md"


def parse(argv: list[str] | None) -> argparse.Namespace:
    d = Sizes()
    p = argparse.ArgumentParser(prog="hack/bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parts", nargs="*", metavar="PART", help=f"any of {', '.join(PARTS)}, all (default all)")
    g = p.add_argument_group("the generated node (the lab)")
    g.add_argument("--processes", type=int, default=d.processes, help="extra idle processes (default %(default)s)")
    g.add_argument("--pods", type=int, default=d.pods, help="extra lab pods, 2 containers each (default %(default)s)")
    g.add_argument("--pod-processes", type=int, default=d.pod_processes,
                   help="processes of the ListProcesses pod (default %(default)s)")
    r = p.add_argument_group("a real node (nothing generated)")
    r.add_argument("--node", action="store_true", help="measure this node's own runtime and an existing pod")
    r.add_argument("--cri-endpoint", help="its CRI socket (default $NSINSPECT_CRI_ENDPOINT, else the first "
                                          "standard socket found)")
    r.add_argument("--pod", metavar="NAMESPACE/NAME", help="the pod every figure is measured on")
    r.add_argument("--container", default="", help="the container exec enters (default the pod's first)")
    r.add_argument("--runtime-state-dir", action="append", type=Path, metavar="DIR",
                   help="runtime state dir for the /proc fallback (repeatable; default the agent's)")
    m = p.add_argument_group("how often")
    m.add_argument("--runs", type=int, default=d.runs, help="calls per Inspect figure (default %(default)s)")
    m.add_argument("--ps-runs", type=int, default=d.ps_runs,
                   help="calls per ListProcesses figure (default %(default)s)")
    m.add_argument("--exec-runs", type=int, default=d.exec_runs, help="sessions per exec figure (default %(default)s)")
    m.add_argument("--mib", type=int, default=d.mib, help="MiB per throughput run (default %(default)s)")
    m.add_argument("--cli-runs", type=int, default=d.cli_runs, help="starts per CLI figure (default %(default)s)")
    o = p.add_argument_group("output")
    o.add_argument("--markdown", type=Path, metavar="FILE", help="also write the table and the machine to FILE")
    o.add_argument("--write-docs", action="store_true", help=f"the same, to {DOCS.relative_to(DOCS.parents[1])}")
    o.add_argument("--json", type=Path, metavar="FILE", help="also write the rows and the machine as JSON")
    args = p.parse_args(argv)
    args.parts = args.parts or ["all"]
    unknown = set(args.parts) - {*PARTS, "all"}
    if unknown:
        p.error(f"unknown part {', '.join(sorted(unknown))}: choose from {', '.join(PARTS)}, all")
    if args.node and (not args.pod or "/" not in args.pod):
        p.error("--node needs --pod NAMESPACE/NAME")
    if args.node:
        args.cri_endpoint = find_endpoint(args.cri_endpoint)
        if not args.cri_endpoint:
            p.error("no CRI socket found: give --cri-endpoint")
    return args


@contextlib.contextmanager
def target_for(args: argparse.Namespace, sizes: Sizes, parts: list[str]) -> Iterator[Target]:
    if args.node:
        namespace, _, name = args.pod.partition("/")
        state = tuple(args.runtime_state_dir or DEFAULT_STATE_DIRS)
        with real_node(args.cri_endpoint, PodRef(namespace, name), args.container, state) as target:
            yield target
    else:
        with lab_node(sizes, busy="ps" in parts) as target:
            yield target


def suite(args: argparse.Namespace) -> tuple[list[Row], machine.Facts]:
    sizes = Sizes(args.processes, args.pods, args.pod_processes, args.runs, args.ps_runs, args.exec_runs, args.mib,
                  args.cli_runs)
    parts = list(PARTS) if "all" in args.parts else [p for p in PARTS if p in args.parts]
    began = time.monotonic()
    with target_for(args, sizes, parts) as target:
        mode = (f"a real node: pod {args.pod}, nothing generated" if args.node else
                f"generated: the lab plus {sizes.processes:,} idle processes and {sizes.pods} pods")
        facts = machine.describe(target.endpoint, mode)
        say("; ".join(f"{k}: {v}" for k, v in facts))
        rows: list[Row] = []
        for part in parts:
            say(f"measuring {part} ...")
            rows += PARTS[part](target, sizes)
    return rows, machine.finish(facts, time.monotonic() - began)


def missed(rows: list[Row], facts: machine.Facts) -> list[str]:
    """A paragraph naming the targets this run missed, with the load the machine was under."""
    names = [r.what for r in rows if r.met is False]
    if not names:
        return ["Every target was met in this run.", ""]
    info = dict(facts)
    return [f"Missed in this run: {'; '.join(names)}. The load average was "
            f"{info.get('load average (1, 5, 15 min) at the start', '?')} at the start on "
            f"{info.get('cores', '?').split()[0]} cores (other work ran too); the notes above give CPU "
            "time where it was measured, which does not count the time others held the CPUs.", ""]


def document(rows: list[Row], facts: machine.Facts, command: str) -> str:
    lines = ["# Benchmarks", "",
             "The last run of `hack/bench` (testbed/bench/), written by it. Each row: our figure, the baseline a",
             "user would otherwise run, measured in the same run on the same node, and the ratio. A figure is",
             "wall time: on a loaded machine it also counts the time other work held the CPUs.", "",
             f"Command: `{command}`", "", "## Results", "", markdown(rows), "", *missed(rows, facts), "## Machine", "",
             "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in facts), "",
             "## Run it", "",
             "- Generated node (as root; brings the lab up if needed, removes everything it creates):",
             "  `hack/bench` (parts: `hack/bench inspect nodemap ps exec cli`; sizes: `hack/bench --help`).",
             "- A real node (as root, on the node, e.g. in the agent's pod or over SSH; creates nothing but a",
             "  temporary agent socket): `hack/bench --node --cri-endpoint unix:///run/containerd/containerd.sock",
             "  --pod NAMESPACE/NAME`. Rows that need the lab are listed as skipped.",
             "- `--write-docs` rewrites this file; `--markdown FILE` and `--json FILE` write elsewhere.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    rows, facts = suite(args)
    print(text(rows))
    command = shlex.join(["hack/bench", *(sys.argv[1:] if argv is None else argv)])
    for path in ([args.markdown] if args.markdown else []) + ([DOCS] if args.write_docs else []):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(document(rows, facts, command))
        say(f"wrote {path}")
    if args.json:
        args.json.write_text(json.dumps({"rows": [asdict(r) | {"ratio": r.ratio, "speedup": r.speedup} for r in rows],
                                         "machine": dict(facts)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
