"""`hack/reliability [load] [restart] [leaks] [--short] [--write-docs]`: the reliability scenarios
against the real agent, each with its figures and the issue's targets; exit 1 when one is missed.

The long versions are the issue's sizes: 50 clients x 200 calls on a node with 3,000 processes and
50 lab pods, processes churning at 250/s with PIDs reused, pods coming and going, containerd killed
and brought back; run once with clients that pause about 0.5 s between calls (the latency targets
apply) and once with clients that ask again at once (the agent saturated: its capacity); the agent
restarted during 5 sessions (SIGTERM and SIGKILL); 1,000 Exec sessions, half cut off.
`--short` runs the sizes CI runs (tests/test_reliability.py)."""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from testbed.bench import machine
from testbed.lab import runtime
from testbed.lab.config import LabConfig
from testbed.lab.pods import Lab
from testbed.reliability import clients, leaks, load, restart

SHORT_LOAD = clients.Plan(clients=8, calls=25, processes=400, pods=6, fork_rate=300, free_pids=600, outage=2.0,
                       workers=2)
SHORT_SESSIONS, LONG_SESSIONS = 100, 1000
DOCS = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hack/reliability", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", choices=("load", "restart", "leaks", []), default=[],
                   help="default: all three")
    p.add_argument("--short", action="store_true", help="CI's sizes")
    p.add_argument("--clients", type=int)
    p.add_argument("--calls", type=int, help="per client")
    p.add_argument("--processes", type=int, help="on the node in all")
    p.add_argument("--pods", type=int)
    p.add_argument("--think", type=float, nargs="+", metavar="SECONDS",
                   help="seconds each client waits between calls; one load run per value (default 0.5 0; "
                        "--short: 0)")
    p.add_argument("--no-outage", action="store_true", help="do not kill containerd")
    p.add_argument("--no-churn", action="store_true", help="no short-lived processes, no pods coming and going")
    p.add_argument("--sessions", type=int, help="leak check sessions")
    p.add_argument("--write-docs", action="store_true", help="write the reports to docs/reliability.md")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def plans(args: argparse.Namespace) -> list[clients.Plan]:
    base = SHORT_LOAD if args.short else clients.Plan()
    base = replace(base, **{k: v for k, v in (("clients", args.clients), ("calls", args.calls),
                                              ("processes", args.processes), ("pods", args.pods)) if v is not None})
    if args.no_outage:
        base = replace(base, outage=0.0)
    if args.no_churn:
        base = replace(base, fork_rate=0.0, churn_lifetime=0.0)
    return [replace(base, think=t) for t in args.think or ([0.0] if args.short else [0.5, 0.0])]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    scenarios = args.scenarios or ["load", "restart", "leaks"]
    cfg = LabConfig()  # restart and leaks use the main lab's canonical pods; load has a lab of its own
    runtime.up(cfg)
    with Lab(cfg) as lab:
        lab.ensure_canonical(lambda _: None)
    facts, began = machine.describe(cfg.endpoint, "generated: lab pods and idle processes"), time.monotonic()
    reports: list[tuple[str, str, bool]] = []  # title, text, ok

    def report(title: str, text: str, ok: bool) -> None:
        print(text, flush=True)
        reports.append((title, text, ok))

    if "load" in scenarios:
        for plan in plans(args):
            done = load.main(plan)
            report(f"load, clients pausing {plan.think:g} s" if plan.think else "load, clients not pausing",
                   done.text(), done.ok())
    if "restart" in scenarios:
        nsinspect = shutil.which("nsinspect") or f"{sys.prefix}/bin/nsinspect"
        for result in restart.main(cfg, "plain", 3 if args.short else 5, nsinspect):
            report(f"restart by {result.how}", result.text(), result.ok())
    if "leaks" in scenarios:
        found = leaks.main(cfg, "plain", args.sessions or (SHORT_SESSIONS if args.short else LONG_SESSIONS))
        report("leaks", found.text(), found.ok())
    ok = all(r[2] for r in reports)
    print("all targets met" if ok else "some targets missed (see above)")
    if args.write_docs:
        command = shlex.join(["hack/reliability", *(sys.argv[1:] if argv is None else argv)])
        DOCS.write_text(document(reports, machine.finish(facts, time.monotonic() - began), command))
    return 0 if ok else 1


def document(reports: list[tuple[str, str, bool]], facts: machine.Facts, command: str) -> str:
    lines = ["# Reliability", "",
             "The last run of `hack/reliability` (testbed/reliability/), written by it: the scenarios, their figures",
             "and the issue's targets. See the README's \"Reliability\" section for what each scenario does.", "",
             f"Command: `{command}`", ""]
    for title, text, ok in reports:
        lines += [f"## {title}: {'targets met' if ok else 'a target missed'}", "", "```", text, "```", ""]
    lines += ["## Machine", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in facts), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
