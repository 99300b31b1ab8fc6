"""`nsinspect` (and `kubectl nsinspect`): see and verify the Linux namespaces of a pod.

Only argparse is imported at start-up; each command imports grpc and friends when it runs,
so `nsinspect --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from nsinspect.cli.errors import EXIT_CODES_HELP as EPILOG
from nsinspect.cli.errors import CliError


def _common(p: argparse.ArgumentParser, pod: bool = True) -> None:
    p.add_argument("--agent", metavar="ADDR", default=os.environ.get("NSINSPECT_AGENT"),
                   help="agent address: unix:///path or host:port (default $NSINSPECT_AGENT)")
    p.add_argument("-o", "--output", choices=("text", "wide", "json", "yaml"), default="text",
                   help="output format (default text)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="per-request timeout")
    if pod:
        p.add_argument("pod", metavar="POD", nargs="?", default="", help="pod name (or give --uid)")
        p.add_argument("-n", "--namespace", default="default", help="the pod's namespace (default: default)")
        p.add_argument("--uid", default="", help="the pod's UID (instead of, or as well as, its name)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl nsinspect" if os.path.basename(sys.argv[0]).startswith("kubectl-") else "nsinspect",
        description="See, compare and verify the Linux namespaces of Kubernetes pods.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ns = sub.add_parser("ns", help="which namespaces each container of a pod has, and are they the right ones",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(ns)
    ns.add_argument("-c", "--container", default="", help="only this container")
    ns.add_argument("--target", action="append", default=[], metavar="CONTAINER=TARGET",
                    help="expect CONTAINER to share TARGET's pid namespace (the spec's targetContainerName); "
                         "repeatable")
    ns.set_defaults(run="nsinspect.cli.commands:run_ns")

    nsmap = sub.add_parser("nsmap", help="every namespace on the node, with the pod and container that owns it")
    _common(nsmap, pod=False)
    nsmap.add_argument("-t", "--type", action="append", default=[], metavar="TYPE",
                       help="only this namespace type (mnt, pid, net, ipc, uts, cgroup, user, time); repeatable")
    nsmap.set_defaults(run="nsinspect.cli.commands:run_nsmap")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "pod") and not (args.pod or args.uid):
        parser.error(f"{args.command}: a pod name or --uid is required")
    module, func = args.run.split(":")
    run: Any = getattr(importlib.import_module(module), func)
    try:
        return int(run(args))
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
