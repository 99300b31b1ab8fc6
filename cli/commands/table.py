"""Every command, in the order `--help` lists them: its name, its help line, how to add its flags,
and the module:function that runs it (imported only then). Only argparse here, so the table is
cheap to import; the flags every command shares (Kubernetes, credentials, output) are added by
`common_flags`, and main turns them into the run's Context.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import EXIT_CODES_HELP as EPILOG

if TYPE_CHECKING:
    from ..context import Context

Run = Callable[["Context", argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    flags: Callable[[argparse.ArgumentParser], None]
    run: str  # "module:function" in this package, imported when the command runs
    usage: str | None = None
    epilog: str | None = None  # shown as written (RawDescriptionHelpFormatter)
    takes_command: bool = False  # takes `-- CMD [ARGS...]` after its flags

    def runner(self) -> Run:
        module, func = self.run.split(":")
        run: Run = getattr(importlib.import_module(f".{module}", __package__), func)
        return run


def common_flags(p: argparse.ArgumentParser, pod: bool = True) -> None:
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


def _many_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-l", "--selector", default="", help="every pod matching this label selector, on every node")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="with -l: in every namespace")
    p.add_argument("--max-concurrency", type=int, default=8, metavar="N", help="nodes asked at once (default 8)")


def _ns_flags(p: argparse.ArgumentParser) -> None:
    common_flags(p)
    p.add_argument("-c", "--container", default="", help="only this container")
    p.add_argument("--target", action="append", default=[], metavar="CONTAINER=TARGET",
                   help="expect CONTAINER to share TARGET's pid namespace (the spec's targetContainerName); "
                        "repeatable")
    _many_flags(p)


def _nsmap_flags(p: argparse.ArgumentParser) -> None:
    common_flags(p, pod=False)
    p.add_argument("-t", "--type", action="append", default=[], metavar="TYPE",
                   help="only this namespace type (mnt, pid, net, ipc, uts, cgroup, user, time); repeatable")
    p.add_argument("--node", default="", help="the node whose agent to ask (through Kubernetes)")
    p.add_argument("--all-nodes", action="store_true", help="ask every node's agent")
    p.add_argument("--max-concurrency", type=int, default=8, metavar="N", help="nodes asked at once (default 8)")


def _ps_flags(p: argparse.ArgumentParser) -> None:
    common_flags(p)
    p.add_argument("-c", "--container", default="", help="only this container (and processes that joined its "
                   "pid namespace)")
    p.add_argument("--tree", action="store_true", help="show parentage, per container")
    p.add_argument("--cpu-sample", type=float, default=None, metavar="SECONDS",
                   help="sample CPU use over this long (default: the agent's, 0.25 s); 0: lifetime averages")
    _many_flags(p)


def _exec_flags(p: argparse.ArgumentParser) -> None:
    common_flags(p)
    p.add_argument("-c", "--container", default="", help="default: the pod's first container")
    p.add_argument("--ns", action="append", default=[], metavar="TYPES",
                   help="namespaces to join, comma-separated (mnt, pid, net, ipc, uts, cgroup, user, time); "
                        "default: all the container has, as nsenter -a; a subset needs create pods/nsenter, as it "
                        "leaves the command in some of the node's")
    p.add_argument("--tools", action="store_true",
                   help="run the agent's toolbox (busybox) against the container, even a distroless one: "
                        "its files are at /target (read-only)")
    p.add_argument("-i", "--stdin", action="store_true", help="pass stdin to the command")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal (raw mode, follows resizes)")
    p.add_argument("--user", type=int, default=None, metavar="UID", help="run as this uid (default: the container's)")
    p.add_argument("--group", type=int, default=None, metavar="GID", help="run as this gid (default: the container's)")
    p.add_argument("--privileged", action="store_true",
                   help="run as root with every capability instead of the container's credentials")
    p.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set in the command's environment (which is the container's); repeatable")
    p.add_argument("-w", "--workdir", default="", help="working directory (default: the container's)")


def _debug_flags(p: argparse.ArgumentParser) -> None:
    common_flags(p)
    p.add_argument("--image", required=True, help="the debugger's image")
    p.add_argument("--target", default="", metavar="CONTAINER", help="share this container's pid namespace")
    p.add_argument("--name", default="", help="the ephemeral container's name (default debugger-XXXXX)")
    p.add_argument("--profile", default="general",
                   choices=("general", "baseline", "restricted", "netadmin", "sysadmin"),
                   help="kubectl debug's security profile (default general)")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="environment; repeatable")
    p.add_argument("-i", "--stdin", action="store_true",
                   help="then open an interactive session in the debugger (through the agent)")
    p.add_argument("-t", "--tty", action="store_true", help="with -i: on a terminal (raw mode, resizes)")
    p.add_argument("--wait-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for the container to run (default 60)")
    p.add_argument("--fallback", action="store_true",
                   help="if the cluster will not run an ephemeral container, debug through the agent instead "
                        "(tools mode; the pod is not changed); on a terminal, you are asked")


def _verify_flags(p: argparse.ArgumentParser) -> None:
    common_flags(p)
    p.add_argument("names", nargs="*", metavar="NAME", help="ephemeral containers (default: all of them)")


def _completion_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=("bash", "zsh"))


COMMANDS = (
    Command("ns", "which namespaces each container of a pod has, and are they the right ones", _ns_flags,
            "ns:run_ns", epilog=EPILOG),
    Command("nsmap", "every namespace on the node, with the pod and container that owns it", _nsmap_flags,
            "nsmap:run_nsmap"),
    Command("ps", "every process of a pod as the node sees it (distroless pods too)", _ps_flags, "ps:run_ps"),
    Command("net", "links, addresses, routes and TCP/UDP sockets of a pod, with their processes", common_flags,
            "net:run_net"),
    Command("exec", "run a command in a container's namespaces (nsenter semantics; no ephemeral container)",
            _exec_flags, "exec:run_exec",
            usage="%(prog)s POD [-c CONTAINER] [--ns TYPES] [--tools] [-i] [-t] [--user UID] -- CMD [ARGS...]",
            epilog="exit code: the command's; 128+N when signal N killed it; 1 with a message on stderr when the "
                   "agent refused or failed (127: command not found)", takes_command=True),
    Command("debug", "add an ephemeral container (like kubectl debug) and verify what it really shares",
            _debug_flags, "debug:run_debug",
            usage="%(prog)s POD --image IMAGE [--target C] [--name N] [--profile P] [--env K=V] [--fallback] "
                  "[-- CMD [ARGS...]]", epilog=EPILOG, takes_command=True),
    Command("verify", "verify what existing ephemeral containers really share", _verify_flags, "verify:run_verify",
            epilog=EPILOG),
    Command("completion", "print a shell completion script (bash or zsh)", _completion_flags,
            "completion:run_completion"),
)
BY_NAME = {c.name: c for c in COMMANDS}
