"""Turn agent answers into what a person reads at a glance, or into stable JSON/YAML.

Text output is a table per question; JSON and YAML are the nsinspect.v1 messages with proto
field names and every field present, so scripts can rely on their shape. Here: the shared pieces
(tables, JSON/YAML, what may reach a terminal) and the Agent service's answers (ns, nsmap);
the Observe service's answers are drawn by their commands (ps, net).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence

from google.protobuf import json_format
from google.protobuf.message import Message

from nsinspect.proto import agent_pb2 as pb

# The namespace types as agent.proto spells them, in the order of the ns table's columns.
NS_COLUMNS = ("mnt", "pid", "net", "ipc", "uts", "cgroup", "user", "time")
_UNPRINTABLE = {c: "?" for c in (*range(32), 127)}
VERDICT_WORDS = {pb.VERDICT_OK: "ok", pb.VERDICT_MISMATCH: "MISMATCH", pb.VERDICT_UNKNOWN: "unknown",
                 pb.VERDICT_UNSPECIFIED: "-"}
SOURCE_WORDS = {pb.SOURCE_CRI: "CRI", pb.SOURCE_PROC: "/proc (CRI unreachable)", pb.SOURCE_UNSPECIFIED: "?"}


def as_dict(msg: Message) -> dict[str, object]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def machine(msg: Message, fmt: str) -> str:
    data = as_dict(msg)
    if fmt == "yaml":
        import yaml  # noqa: PLC0415 - only for -o yaml

        return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    return json.dumps(data, indent=2) + "\n"


def write(msg: Message, output: str, text: Callable[[], str]) -> None:
    """One answer on stdout: as JSON or YAML, else the text `text` draws."""
    sys.stdout.write(machine(msg, output) if output in ("json", "yaml") else text())


def printable(text: str) -> str:
    """Control characters (a process may name itself anything) must not reach the terminal."""
    return text.translate(_UNPRINTABLE)


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in rows)


def _cell(s: pb.Sharing, ino: int, wide: bool) -> str:
    if s.unknown:
        text = "?"
    elif s.host:
        text = "host"
    elif s.sandbox:
        text = "sandbox"
    elif s.containers:
        text = ",".join(s.containers)
    else:
        text = "own"
    return f"{text}:{ino}" if wide and ino else text


def inspection_text(resp: pb.InspectResponse, wide: bool = False, narrowed: bool = False) -> str:
    pod = resp.pod
    out = [f"Pod {pod.namespace}/{pod.name}  uid {pod.uid}  node {resp.host.node_name or '?'}  "
           f"via {SOURCE_WORDS[pod.source]}{' (' + pod.runtime + ')' if pod.runtime else ''}\n"]
    sb = pod.sandbox
    if sb.id:
        out.append(f"Sandbox {sb.id[:12]}  pid {sb.process.pid or '-'}  {sb.state}"
                   f"{'  hostname ' + sb.hostname if sb.hostname else ''}"
                   f"  net={sb.options.network} pid={sb.options.pid} ipc={sb.options.ipc}\n")
    out.append("\n")
    by_name = {c.name: c for c in pod.containers}
    rows = [("CONTAINER", "STATE", "PID", *(t.upper() for t in NS_COLUMNS))]
    for row in resp.comparison:
        c = by_name.get(row.container)
        inos = {n.type: n.ino for n in c.process.namespaces} if c else {}
        cells = {s.type: _cell(s, inos.get(s.type, 0), wide) for s in row.cells}
        rows.append((row.container, c.state if c else "?", str(c.process.pid if c else "?"),
                     *(cells.get(t, "-") for t in NS_COLUMNS)))
    if not narrowed:  # containers that are not running have no namespaces to show
        listed = {r.container for r in resp.comparison}
        rows += [(c.name, c.state, "-", *("-" for _ in NS_COLUMNS)) for c in pod.containers if c.name not in listed]
    out.append(table(rows))
    out.append(f"\nVerification: {VERDICT_WORDS[resp.verdict]}\n")
    for v in resp.verification:
        out.append(f"  {v.container}: {VERDICT_WORDS[v.verdict]}\n")
        for check in v.checks:
            if wide or check.verdict != pb.VERDICT_OK or check.type == "pid":
                mark = {pb.VERDICT_OK: "ok", pb.VERDICT_MISMATCH: "XX", pb.VERDICT_UNKNOWN: "??"}[check.verdict]
                out.append(f"    [{mark}] {check.explanation}\n")
    for w in resp.warnings:
        out.append(f"warning: {w}\n")
    return "".join(out)


def _owners_text(ns: pb.NodeNamespace) -> str:
    parts: list[str] = []
    pods: dict[str, list[str]] = {}
    for o in ns.owners:
        if o.kind == "pod":
            pods.setdefault(f"{o.pod_namespace}/{o.pod_name}", []).append("sandbox" if o.sandbox else o.container)
        elif o.kind not in parts:
            parts.append(o.kind)
    parts += [f"{pod}[{','.join(members)}]" for pod, members in pods.items()]
    return " ".join(parts) or "unknown"


def node_map_text(resp: pb.NodeMapResponse, wide: bool = False) -> str:
    rows = [("NS", "TYPE", "NPROCS", "PID", "OWNER", "COMMAND")]
    for ns in resp.namespaces:
        command = ns.command if wide or len(ns.command) <= 40 else ns.command[:37] + "..."
        rows.append((str(ns.namespace.ino), ns.namespace.type, str(ns.processes), str(ns.lowest_pid),
                     _owners_text(ns), command))
    return table(rows) + f"{len(resp.namespaces)} namespaces, pods via {SOURCE_WORDS[resp.source]}\n"
