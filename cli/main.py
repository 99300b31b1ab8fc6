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

from .errors import EXIT_CODES_HELP as EPILOG
from .errors import CliError

# Before any command imports grpc: its C core would print TLS handshake failures to stderr at INFO,
# on top of our one-line error.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _common(p: argparse.ArgumentParser, pod: bool = True) -> None:
    k8s = p.add_argument_group("Kubernetes (kubectl's flags)")
    k8s.add_argument("--kubeconfig", default=None, help="kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
    k8s.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    k8s.add_argument("--agent-namespace", default="nsinspect-system", metavar="NS",
                     help="where the agent DaemonSet runs (default nsinspect-system)")
    p.add_argument("--agent", metavar="ADDR", default=os.environ.get("NSINSPECT_AGENT"),
                   help="talk to this agent directly (unix:///path or host:port) instead of through Kubernetes "
                        "(default $NSINSPECT_AGENT)")
    creds = p.add_argument_group("credentials for the agent (agent/server/auth.py checks every call)")
    creds.add_argument("--token", default=os.environ.get("NSINSPECT_TOKEN"), metavar="TOKEN",
                       help="bearer token, audience nsinspect (default $NSINSPECT_TOKEN, else the kubeconfig user's; "
                            "none needed on the agent's unix socket)")
    creds.add_argument("--tls-ca", metavar="FILE", help="CA to verify an agent that serves TLS")
    creds.add_argument("--tls-cert", metavar="FILE", help="client certificate for an mTLS agent (CN user, O groups)")
    creds.add_argument("--tls-key", metavar="FILE", help="the client certificate's key")
    p.add_argument("-o", "--output", choices=("text", "wide", "json", "yaml"), default="text",
                   help="output format (default text)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="per-request timeout")
    if pod:
        p.add_argument("pod", metavar="POD", nargs="?", default="", help="pod name (or give --uid)")
        p.add_argument("-n", "--namespace", default=None,
                       help="the pod's namespace (default: the context's, else default)")
        p.add_argument("--uid", default="", help="the pod's UID (instead of, or as well as, its name)")


def _many(p: argparse.ArgumentParser) -> None:
    p.add_argument("-l", "--selector", default="", help="every pod matching this label selector, on every node")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="with -l: in every namespace")
    p.add_argument("--max-concurrency", type=int, default=8, metavar="N", help="nodes asked at once (default 8)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl nsinspect" if os.path.basename(sys.argv[0]).startswith("kubectl-") else "nsinspect",
        description="See, compare and verify the Linux namespaces of Kubernetes pods.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)

    ns = sub.add_parser("ns", help="which namespaces each container of a pod has, and are they the right ones",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(ns)
    ns.add_argument("-c", "--container", default="", help="only this container")
    ns.add_argument("--target", action="append", default=[], metavar="CONTAINER=TARGET",
                    help="expect CONTAINER to share TARGET's pid namespace (the spec's targetContainerName); "
                         "repeatable")
    _many(ns)
    ns.set_defaults(run="nsinspect.cli.commands:run_ns")

    nsmap = sub.add_parser("nsmap", help="every namespace on the node, with the pod and container that owns it")
    _common(nsmap, pod=False)
    nsmap.add_argument("-t", "--type", action="append", default=[], metavar="TYPE",
                       help="only this namespace type (mnt, pid, net, ipc, uts, cgroup, user, time); repeatable")
    nsmap.add_argument("--node", default="", help="the node whose agent to ask (through Kubernetes)")
    nsmap.add_argument("--all-nodes", action="store_true", help="ask every node's agent")
    nsmap.add_argument("--max-concurrency", type=int, default=8, metavar="N", help="nodes asked at once (default 8)")
    nsmap.set_defaults(run="nsinspect.cli.commands:run_nsmap")

    ps = sub.add_parser("ps", help="every process of a pod as the node sees it (distroless pods too)")
    _common(ps)
    ps.add_argument("-c", "--container", default="", help="only this container (and processes that joined its "
                    "pid namespace)")
    ps.add_argument("--tree", action="store_true", help="show parentage, per container")
    ps.add_argument("--cpu-sample", type=float, default=None, metavar="SECONDS",
                    help="sample CPU use over this long (default: the agent's, 0.25 s); 0: lifetime averages")
    _many(ps)
    ps.set_defaults(run="nsinspect.cli.ps:run_ps")

    net = sub.add_parser("net", help="links, addresses, routes and TCP/UDP sockets of a pod, with their processes")
    _common(net)
    net.set_defaults(run="nsinspect.cli.net:run_net")

    ex = sub.add_parser(
        "exec", help="run a command in a container's namespaces (nsenter semantics; no ephemeral container)",
        usage="%(prog)s POD [-c CONTAINER] [--ns TYPES] [--tools] [-i] [-t] [--user UID] -- CMD [ARGS...]",
        epilog="exit code: the command's; 128+N when signal N killed it; 1 with a message on stderr when the "
               "agent refused or failed (127: command not found)", formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(ex)
    ex.add_argument("-c", "--container", default="", help="default: the pod's first container")
    ex.add_argument("--ns", action="append", default=[], metavar="TYPES",
                    help="namespaces to join, comma-separated (mnt, pid, net, ipc, uts, cgroup, user, time); "
                         "default: all the container has, as nsenter -a; a subset needs create pods/nsenter, as it "
                         "leaves the command in some of the node's")
    ex.add_argument("--tools", action="store_true",
                    help="run the agent's toolbox (busybox) against the container, even a distroless one: "
                         "its files are at /target (read-only)")
    ex.add_argument("-i", "--stdin", action="store_true", help="pass stdin to the command")
    ex.add_argument("-t", "--tty", action="store_true", help="allocate a terminal (raw mode, follows resizes)")
    ex.add_argument("--user", type=int, default=None, metavar="UID", help="run as this uid (default: the container's)")
    ex.add_argument("--group", type=int, default=None, metavar="GID", help="run as this gid (default: the container's)")
    ex.add_argument("--privileged", action="store_true",
                    help="run as root with every capability instead of the container's credentials")
    ex.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE",
                    help="set in the command's environment (which is the container's); repeatable")
    ex.add_argument("-w", "--workdir", default="", help="working directory (default: the container's)")
    ex.set_defaults(run="nsinspect.cli.exec:run_exec", takes_command=True)

    dbg = sub.add_parser(
        "debug", help="add an ephemeral container (like kubectl debug) and verify what it really shares",
        usage="%(prog)s POD --image IMAGE [--target C] [--name N] [--profile P] [--env K=V] [--fallback] "
              "[-- CMD [ARGS...]]",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(dbg)
    dbg.add_argument("--image", required=True, help="the debugger's image")
    dbg.add_argument("--target", default="", metavar="CONTAINER", help="share this container's pid namespace")
    dbg.add_argument("--name", default="", help="the ephemeral container's name (default debugger-XXXXX)")
    dbg.add_argument("--profile", default="general",
                     choices=("general", "baseline", "restricted", "netadmin", "sysadmin"),
                     help="kubectl debug's security profile (default general)")
    dbg.add_argument("--env", action="append", default=[], metavar="K=V", help="environment; repeatable")
    dbg.add_argument("-i", "--stdin", action="store_true",
                     help="then open an interactive session in the debugger (through the agent)")
    dbg.add_argument("-t", "--tty", action="store_true", help="with -i: on a terminal (raw mode, resizes)")
    dbg.add_argument("--wait-timeout", type=float, default=60.0, metavar="SECONDS",
                     help="how long to wait for the container to run (default 60)")
    dbg.add_argument("--fallback", action="store_true",
                     help="if the cluster will not run an ephemeral container, debug through the agent instead "
                          "(tools mode; the pod is not changed); on a terminal, you are asked")
    dbg.set_defaults(run="nsinspect.cli.debug:run_debug", takes_command=True)

    ver = sub.add_parser("verify", help="verify what existing ephemeral containers really share",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(ver)
    ver.add_argument("names", nargs="*", metavar="NAME", help="ephemeral containers (default: all of them)")
    ver.set_defaults(run="nsinspect.cli.debug:run_verify")

    comp = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    comp.add_argument("shell", choices=("bash", "zsh"))
    comp.set_defaults(run="nsinspect.cli.completion:run_completion")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `-- CMD ARGS...` ends our flags: everything after the first "--" is the command, verbatim.
    if argv[:1] == ["__complete"]:  # the words being completed are not ours to parse
        return int(importlib.import_module("nsinspect.cli.completion").run_complete(
            argparse.Namespace(words=argv[1:])))
    head, command = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = parser.parse_args(head)
    if getattr(args, "takes_command", False):
        args.command = command
    elif command:
        parser.error(f"{args.subcommand} takes no -- CMD")
    if hasattr(args, "pod") and not (args.pod or args.uid or getattr(args, "selector", "")):
        parser.error(f"{args.subcommand}: a pod name, --uid or -l SELECTOR is required")
    if getattr(args, "selector", "") and (args.pod or args.agent):
        parser.error(f"{args.subcommand}: -l SELECTOR goes through Kubernetes, without POD or --agent")
    if getattr(args, "agent", None) and hasattr(args, "namespace"):
        args.namespace = args.namespace or "default"  # direct mode: no context to take it from
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
