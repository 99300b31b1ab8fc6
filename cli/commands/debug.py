"""`nsinspect debug` and `nsinspect verify`: ephemeral containers, and what they really share.

debug adds an ephemeral container the way `kubectl debug --target` does (a strategic merge patch
of the ephemeralcontainers subresource), waits for it to run, then asks the node's agent which
namespaces it actually got and verifies them against the pod spec. When the cluster will not add
it (disabled, forbidden, invalid, never started), it says why in one line and offers the fallback.
The check is verify's (verify.py), the session after -i and the fallback are exec's (exec.py).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any

from ..context import Context
from ..errors import EXIT_OK, CliError
from .exec import RemoteCommand, run_in_pod
from .verify import verify_containers

# kubectl debug's profiles, as they shape an ephemeral container's securityContext.
PROFILES: dict[str, dict[str, Any] | None] = {
    "general": {"capabilities": {"add": ["SYS_PTRACE"]}},
    "baseline": None,
    "restricted": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                   "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
    "netadmin": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
    "sysadmin": {"privileged": True},
}
FALLBACK_ADVICE = "run with --fallback to debug through the nsinspect agent without changing the pod"
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what kubectl's random suffixes are made of


def debugger_name() -> str:
    return "debugger-" + "".join(random.choice(_NAME_CHARS) for _ in range(5))


def ephemeral_container(args: argparse.Namespace, name: str) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": args.image, "terminationMessagePolicy": "File",
                                 "resources": {}, "stdin": args.stdin, "tty": args.tty}
    if args.target:
        container["targetContainerName"] = args.target
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command:
        container["command"] = command
    if args.env:
        container["env"] = [dict(zip(("name", "value"), kv.split("=", 1), strict=True)) for kv in args.env]
    if (security := PROFILES[args.profile]) is not None:
        container["securityContext"] = security
    return container


def refusal(status: int, body: str, pod: str) -> CliError:
    """The cluster's answer to the patch, in one line: which of the known refusals it is."""
    try:
        doc = json.loads(body or "{}")
    except ValueError:
        doc = {}
    message = doc.get("message", "") or body.strip()
    if status == 404 and not (doc.get("details") or {}).get("name"):
        what = "ephemeral containers are disabled for this cluster"
    elif status == 403 and "violates PodSecurity" in message:
        what = f"rejected by Pod Security admission: {message}"
    elif status == 403:
        what = f"forbidden: {message} (you need patch on pods/ephemeralcontainers)"
    elif status == 422:
        what = f"invalid: {message}"
    elif status == 404:
        what = f'pod "{pod}" not found'
    else:
        what = f"the API server refused it: {message} (HTTP {status})"
    return CliError(f"cannot add a debug container to {pod}: {what}; {FALLBACK_ADVICE}")


def add(core: Any, namespace: str, pod: str, container: dict[str, Any]) -> str:
    """PATCH the subresource; returns the resourceVersion to watch from."""
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    body = {"spec": {"ephemeralContainers": [container]}}
    try:
        patched = core.patch_namespaced_pod_ephemeralcontainers(
            pod, namespace, body, _content_type="application/strategic-merge-patch+json")
    except ApiException as err:
        raise refusal(err.status, err.body or "", f"{namespace}/{pod}") from None
    return str(patched.metadata.resource_version)


def _state(pod: Any, name: str) -> tuple[str, str]:
    """("running" | "terminated" | "waiting" | "", detail) of ephemeral container `name`."""
    for status in (pod.status.ephemeral_container_statuses or []) if pod.status else []:
        if status.name != name or status.state is None:
            continue
        if status.state.running:
            return "running", ""
        if status.state.terminated:
            t = status.state.terminated
            return "terminated", f"{t.reason or 'exited'} (exit code {t.exit_code})"
        if status.state.waiting:
            w = status.state.waiting
            return "waiting", f"{w.reason or 'waiting'}{': ' + w.message if w.message else ''}"
    return "", ""


def wait_running(core: Any, namespace: str, pod: str, name: str, *, since: str, timeout: float) -> None:
    """Watch the pod until the container runs; show waiting reasons as they change."""
    from kubernetes import watch  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    shown, seen_status = "", False
    show = sys.stderr.isatty()
    print(f"waiting for ephemeral container {name} to start...", file=sys.stderr)
    while (left := deadline - time.monotonic()) > 0:
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_pod, namespace, field_selector=f"metadata.name={pod}",
                              resource_version=since, timeout_seconds=max(1, int(left))):
            obj = event["object"]
            since = obj.metadata.resource_version
            state, detail = _state(obj, name)
            seen_status |= bool(state)
            if state == "running":
                w.stop()
                return
            if state == "terminated":
                w.stop()
                raise CliError(f"ephemeral container {name} terminated before it could be checked: {detail}")
            if detail and detail != shown:
                shown = detail
                print(f"  {name}: {detail}", file=sys.stderr)
            if show:
                print(".", end="", file=sys.stderr, flush=True)
    if not seen_status:
        raise CliError(f"timed out after {timeout:.0f}s: the API server accepted ephemeral container {name} but "
                       f"no kubelet ever reported it (the node may not support ephemeral containers); "
                       f"{FALLBACK_ADVICE}")
    raise CliError(f"timed out after {timeout:.0f}s waiting for ephemeral container {name} to run"
                   f"{' (last: ' + shown + ')' if shown else ''}")


def run_debug(ctx: Context, args: argparse.Namespace) -> int:
    from .. import kube  # noqa: PLC0415 - the kubernetes client is slow to import

    if ctx.agent:
        raise CliError("debug adds an ephemeral container through Kubernetes: drop --agent")
    k = ctx.kube()
    namespace = ctx.namespace()
    pod = kube.get_pod(k, namespace, ctx.pod)
    if args.target and args.target not in [c.name for c in pod.spec.containers]:
        raise CliError(f'pod {namespace}/{ctx.pod} has no container "{args.target}" to target')
    name = args.name or debugger_name()
    try:
        since = add(k.core, namespace, ctx.pod, ephemeral_container(args, name))
        print(f"added ephemeral container {name} to {namespace}/{ctx.pod}", file=sys.stderr)
        wait_running(k.core, namespace, ctx.pod, name, since=since, timeout=args.wait_timeout)
    except CliError as err:
        question = f"{err}\nDebug through the nsinspect agent instead (the pod is not changed)?"
        if not (args.fallback or _agrees(question)):
            raise
        print(f"warning: {err}", file=sys.stderr)
        return fallback(ctx, args)
    verified = verify_containers(ctx, [name])
    if not args.stdin:
        return verified
    session = attach(ctx, args, name)
    return verified if verified != EXIT_OK else session


def _agrees(question: str) -> bool:
    """Ask on a terminal; never when stdin is not one (scripts get the error and its advice)."""
    if not sys.stdin.isatty():
        return False
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def attach(ctx: Context, args: argparse.Namespace, name: str) -> int:
    """-i/-t: a session in the debugger container, through the agent (its own namespaces and image,
    so it needs the agent and pods/exec rather than pods/attach)."""
    return _session(ctx, args, container=name, tools=False)


def _session(ctx: Context, args: argparse.Namespace, *, container: str, tools: bool) -> int:
    """An exec session through the agent with debug's command, environment and terminal flags."""
    return run_in_pod(ctx, RemoteCommand(tuple(args.command or ["sh"]), container, tools=tools, stdin=args.stdin,
                                         tty=args.tty, env=tuple(args.env)))


def fallback(ctx: Context, args: argparse.Namespace) -> int:
    """The same debug session, through the agent's Exec in tools mode against the target: the
    debugger's tools run in the target's namespaces (all but mnt), and the pod is not changed."""
    print(f"debugging {ctx.namespace()}/{ctx.pod} through the nsinspect agent instead", file=sys.stderr)
    return _session(ctx, args, container=args.target, tools=True)  # no target: the pod's first container
