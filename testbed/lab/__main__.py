"""`hack/lab up|down|env|pods|status`: each idempotent, each says what it did."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import grpc

from nsinspect.proto.rpcerror import rpc_status
from testbed.lab import runtime
from testbed.lab.config import LabConfig


def say(msg: str) -> None:
    print(f"lab: {msg}", flush=True)


def cmd_env(cfg: LabConfig) -> int:
    print(f"export NSINSPECT_CRI_ENDPOINT={cfg.endpoint}")
    print(f"export CONTAINER_RUNTIME_ENDPOINT={cfg.endpoint}")  # crictl
    print(f"export CONTAINERD_ADDRESS={cfg.socket}")  # ctr
    print("export CONTAINERD_NAMESPACE=k8s.io")
    return 0


def cmd_pods(cfg: LabConfig) -> int:
    from testbed.lab.pods import Lab  # noqa: PLC0415 - needs a running lab

    if not runtime.is_up(cfg):
        say("the lab is down: run `hack/lab up` first")
        return 1
    with Lab(cfg) as lab:
        lab.ensure_canonical(say)
    return 0


def cmd_status(cfg: LabConfig) -> int:
    from testbed.lab.pods import Lab  # noqa: PLC0415

    if not runtime.is_up(cfg):
        print(f'lab "{cfg.name}": down')
        return 3
    print(f'lab "{cfg.name}": up (containerd pid {runtime.containerd_pid(cfg)}, {cfg.endpoint})')
    with Lab(cfg) as lab:
        pods = lab.pods()
    if not pods:
        print("no pods")
        return 0
    rows = [("POD", "SANDBOX", "PID", "CONTAINER", "CONTAINER-ID", "PID")]
    for pod in pods:
        first = True
        for c in pod.containers.values() or [None]:
            head = (f"{pod.spec.namespace}/{pod.name}", pod.sandbox_id[:13], str(pod.sandbox_pid or "-")) \
                if first else ("", "", "")
            tail = (c.name, c.id[:13], str(c.pid or "exited")) if c else ("-", "-", "-")
            rows.append((*head, *tail))
            first = False
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/lab", description="A local single-node containerd lab.")
    parser.add_argument("--name", default=os.environ.get("NSINSPECT_LAB", "lab"), help="lab instance name")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="install packages, start containerd, import the lab images")
    down = sub.add_parser("down", help="remove pods, stop containerd, clean mounts, netns and cgroups")
    down.add_argument("--purge", action="store_true", help="also delete the image store")
    sub.add_parser("env", help="print shell exports for the agent, tests and demo")
    sub.add_parser("pods", help="create the canonical pods")
    sub.add_parser("status", help="is the lab up, and which pods run (exit 3 when down)")
    args = parser.parse_args(argv)
    cfg = LabConfig(name=args.name)
    try:
        return run(args, cfg)
    except grpc.RpcError as err:
        say(f"error: the runtime refused: {rpc_status(err)[1]}")
    except (RuntimeError, OSError, subprocess.CalledProcessError) as err:
        say(f"error: {err}")
    return 1


def run(args: argparse.Namespace, cfg: LabConfig) -> int:
    if args.cmd in ("up", "down", "pods") and os.geteuid() != 0:
        say("must run as root (it starts containerd and makes namespaces)")
        return 1
    if args.cmd == "up":
        runtime.up(cfg, say)
        return 0
    if args.cmd == "down":
        runtime.down(cfg, say, purge=args.purge)
        return 0
    if args.cmd == "env":
        return cmd_env(cfg)
    if args.cmd == "pods":
        return cmd_pods(cfg)
    return cmd_status(cfg)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `hack/lab status | head`
        sys.stderr.close()
        sys.exit(0)
