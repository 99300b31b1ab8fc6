"""Server-side `Table` rendering (meta.k8s.io/v1) for `kubectl get pods|nodes`, with the columns
and STATUS logic of pkg/printers/internalversion for those two kinds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Json = dict[str, Any]


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    return f"{h // 24}d"


def _age(obj: Json) -> str:
    created = (obj.get("metadata") or {}).get("creationTimestamp")
    if not created:
        return "<unknown>"
    then = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return human_duration((datetime.now(UTC) - then).total_seconds())


def _column(name: str, type_: str = "string", priority: int = 0, fmt: str = "") -> Json:
    return {"name": name, "type": type_, "format": fmt, "description": "", "priority": priority}


def _meta_row(obj: Json, cells: list[Any]) -> Json:
    return {"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                       "metadata": obj.get("metadata") or {}}}


def pod_status_text(pod: Json) -> str:
    """The STATUS column: waiting or terminated reasons win over the phase; Terminating last."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for cs in reversed(status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            term = state["terminated"]
            reason = term.get("reason") or (f"Signal:{term['signal']}" if term.get("signal")
                                            else f"ExitCode:{term.get('exitCode', 0)}")
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    return str(reason)


def pods_table(pods: list[Json], rv: int) -> Json:
    columns = [_column("Name", fmt="name"), _column("Ready"), _column("Status"), _column("Restarts"),
               _column("Age"), _column("IP", priority=1), _column("Node", priority=1),
               _column("Nominated Node", priority=1), _column("Readiness Gates", priority=1)]
    rows = []
    for pod in pods:
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        total = len((pod.get("spec") or {}).get("containers") or [])
        ready = sum(1 for s in statuses if s.get("ready"))
        restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
        status = pod.get("status") or {}
        rows.append(_meta_row(pod, [pod["metadata"]["name"], f"{ready}/{total}", pod_status_text(pod), restarts,
                                    _age(pod), status.get("podIP") or "<none>",
                                    (pod.get("spec") or {}).get("nodeName") or "<none>", "<none>", "<none>"]))
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(rv)},
            "columnDefinitions": columns, "rows": rows}


def nodes_table(nodes: list[Json], rv: int) -> Json:
    columns = [_column("Name", fmt="name"), _column("Status"), _column("Roles"), _column("Age"),
               _column("Version"), _column("Internal-IP", priority=1), _column("External-IP", priority=1),
               _column("OS-Image", priority=1), _column("Kernel-Version", priority=1),
               _column("Container-Runtime", priority=1)]
    rows = []
    for node in nodes:
        status = node.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        info = status.get("nodeInfo") or {}
        internal = next((a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalIP"),
                        "<none>")
        rows.append(_meta_row(node, [node["metadata"]["name"], "Ready" if ready else "NotReady", "<none>",
                                     _age(node), info.get("kubeletVersion", ""), internal, "<none>",
                                     info.get("osImage", ""), info.get("kernelVersion", ""),
                                     info.get("containerRuntimeVersion", "")]))
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(rv)},
            "columnDefinitions": columns, "rows": rows}
