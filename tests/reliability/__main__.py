"""`hack/reliability [load] [restart] [leaks] [--short]`: the reliability scenarios against the real
agent, each with its figures and the issue's targets; exit 1 when one is missed.

The long versions are the issue's sizes: 50 clients x 200 calls on a node with 3,000 processes and
50 lab pods, processes churning at 250/s with PIDs reused, containerd killed and brought back; the
agent restarted during 5 sessions (SIGTERM and SIGKILL); 1,000 Exec sessions, half cut off.
`--short` runs the sizes CI runs (tests/test_reliability.py)."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from dataclasses import replace

from tests.lab import runtime
from tests.lab.config import LabConfig
from tests.lab.pods import Lab
from tests.reliability import leaks, load, restart

SHORT_LOAD = load.Plan(clients=8, calls=25, processes=400, pods=6, fork_rate=300, free_pids=600, outage=2.0,
                       workers=2)
SHORT_SESSIONS, LONG_SESSIONS = 100, 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hack/reliability", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", choices=("load", "restart", "leaks", []), default=[],
                   help="default: all three")
    p.add_argument("--short", action="store_true", help="CI's sizes")
    p.add_argument("--clients", type=int)
    p.add_argument("--calls", type=int, help="per client")
    p.add_argument("--processes", type=int, help="on the node in all")
    p.add_argument("--pods", type=int)
    p.add_argument("--think", type=float, help="seconds each client waits between calls (default 0)")
    p.add_argument("--no-outage", action="store_true", help="do not kill containerd")
    p.add_argument("--no-churn", action="store_true", help="no short-lived processes, no pods coming and going")
    p.add_argument("--sessions", type=int, help="leak check sessions")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    scenarios = args.scenarios or ["load", "restart", "leaks"]
    plan = SHORT_LOAD if args.short else load.Plan()
    plan = replace(plan, **{k: v for k, v in (("clients", args.clients), ("calls", args.calls),
                                              ("processes", args.processes), ("pods", args.pods),
                                              ("think", args.think)) if v is not None})
    if args.no_outage:
        plan = replace(plan, outage=0.0)
    if args.no_churn:
        plan = replace(plan, fork_rate=0.0, churn_lifetime=0.0)
    ok = True
    cfg = LabConfig()  # restart and leaks use the main lab's canonical pods; load has a lab of its own
    if {"restart", "leaks"} & set(scenarios):
        runtime.up(cfg)
        with Lab(cfg) as lab:
            lab.ensure_canonical(lambda _: None)
    if "load" in scenarios:
        report = load.main(plan)
        print(report.text(), flush=True)
        ok &= report.ok()
    if "restart" in scenarios:
        nsinspect = shutil.which("nsinspect") or f"{sys.prefix}/bin/nsinspect"
        for result in restart.main(cfg, "plain", 3 if args.short else 5, nsinspect):
            print(result.text(), flush=True)
            ok &= result.ok()
    if "leaks" in scenarios:
        found = leaks.main(cfg, "plain", args.sessions or (SHORT_SESSIONS if args.short else LONG_SESSIONS))
        print(found.text(), flush=True)
        ok &= found.ok()
    print("all targets met" if ok else "some targets missed (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
