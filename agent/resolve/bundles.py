"""The container runtime's own records on disk: which pod sandboxes and containers exist, and their PIDs.

When the CRI socket is down the containers keep running under their shims, and the runtime's
documented per-task state still says what they are:
- containerd: each task's OCI bundle, `<state>/io.containerd.runtime.v2.task/k8s.io/<id>/` with
  `config.json` (annotations name pod and container) and `init.pid`. A task exists only from the
  container's start until containerd deletes it, so containers stopped through CRI before the outage,
  or created but never started, are not listed; one whose init died while containerd was down is.
- CRI-O: `<runroot>/overlay-containers/<id>/userdata/` with `config.json` and `pidfile`, for every
  container until it is removed.
Parsed specs are cached by (path, mtime, size, inode), so a scan costs a directory listing and a stat
per container of the node. Nothing here checks that a PID is still the process it names: callers do.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIRS: tuple[Path, ...] = (Path("/run/containerd"), Path("/run/containers/storage"))
_TASK_DIRS = ("io.containerd.runtime.v2.task", "io.containerd.runtime.v1.linux")
_CRI_NAMESPACE = "k8s.io"
_CRIO_CONTAINERS = "overlay-containers"

# Annotation keys: containerd's CRI plugin, then CRI-O's (CRI-O also copies the kubelet's labels).
_CTRD = "io.kubernetes.cri."
_CRIO = "io.kubernetes.cri-o."
_POD_NAME, _POD_NAMESPACE, _POD_UID = "io.kubernetes.pod.name", "io.kubernetes.pod.namespace", "io.kubernetes.pod.uid"
_CONTAINER_NAME = "io.kubernetes.container.name"

_StatKey = tuple[int, int, int]


@dataclass(frozen=True)
class Bundle:
    """One pod sandbox or container as its runtime recorded it."""

    id: str
    runtime: str  # "containerd" | "cri-o"
    is_sandbox: bool
    sandbox_id: str
    pod_namespace: str
    pod_name: str
    pod_uid: str
    name: str = ""  # container name; empty for sandboxes
    image: str = ""
    # OCI linux.namespaces as (type, path); an empty path asks for a new namespace.
    namespaces: tuple[tuple[str, str], ...] = ()
    hostname: str = ""
    # ns since the epoch: CRI-O's Created annotation; 0 for containerd, whose bundle does not record it.
    created_at: int = 0
    # init.pid (containerd, written when the task is created) or pidfile (CRI-O, written when the
    # container starts); set by BundleStore, None for a Bundle straight from bundle_from_spec.
    pid_file: Path | None = None
    env: tuple[str, ...] = ()  # process.env: what CRI exec gives a command (the init may have changed its own)

    def namespace_path(self, oci_type: str) -> str | None:
        """The path the spec joins for `oci_type` ("" for a new namespace), None when it has no entry."""
        return next((path for t, path in self.namespaces if t == oci_type), None)


@dataclass(frozen=True)
class Scan:
    """All bundles of the node; `available` is False when no state directory could be read at all."""

    bundles: tuple[Bundle, ...] = ()
    available: bool = False


def read_pid(bundle: Bundle) -> int:
    """The PID the runtime wrote for the bundle's init process, 0 when there is none."""
    if bundle.pid_file is None:
        return 0
    try:
        return int(bundle.pid_file.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def bundle_from_spec(spec: Mapping[str, Any], container_id: str, runtime: str) -> Bundle | None:
    """A Bundle from an OCI spec's annotations; None when the spec is not a Kubernetes pod's."""
    ann = spec.get("annotations") or {}
    if not isinstance(ann, Mapping):
        return None
    linux = spec.get("linux")
    linux = linux if isinstance(linux, Mapping) else {}
    namespaces = tuple((str(ns.get("type", "")), str(ns.get("path", "")))
                       for ns in linux.get("namespaces") or () if isinstance(ns, Mapping))
    hostname = str(spec.get("hostname") or "")
    process = spec.get("process")
    env = tuple(str(e) for e in (process.get("env") or () if isinstance(process, Mapping) else ()))
    if runtime == "containerd":
        kind = ann.get(_CTRD + "container-type")
        if kind not in ("sandbox", "container"):
            return None
        return Bundle(container_id, runtime, kind == "sandbox", str(ann.get(_CTRD + "sandbox-id", "")),
                      str(ann.get(_CTRD + "sandbox-namespace", "")), str(ann.get(_CTRD + "sandbox-name", "")),
                      str(ann.get(_CTRD + "sandbox-uid", "")), str(ann.get(_CTRD + "container-name", "")),
                      str(ann.get(_CTRD + "image-name", "")), namespaces, hostname, env=env)
    kind = ann.get(_CRIO + "ContainerType")
    if kind not in ("sandbox", "container"):
        return None
    labels = _json_map(ann.get(_CRIO + "Labels"))
    meta = _json_map(ann.get(_CRIO + "Metadata"))

    def pick(key: str) -> str:
        return str(ann.get(key) or labels.get(key) or "")

    name = "" if kind == "sandbox" else pick(_CONTAINER_NAME) or str(meta.get("name", ""))
    return Bundle(container_id, runtime, kind == "sandbox", str(ann.get(_CRIO + "SandboxID", "")),
                  pick(_POD_NAMESPACE), pick(_POD_NAME), pick(_POD_UID), name,
                  str(ann.get(_CRIO + "ImageName", "")), namespaces,
                  hostname or str(ann.get(_CRIO + "HostName", "")), _rfc3339_ns(str(ann.get(_CRIO + "Created", ""))),
                  env=env)


def _json_map(raw: object) -> dict[str, Any]:
    if not isinstance(raw, str):
        return {}
    with contextlib.suppress(ValueError):
        parsed = json.loads(raw)
        if isinstance(parsed, dict):
            return parsed
    return {}


def _rfc3339_ns(text: str) -> int:
    """Go's RFC 3339 time with nanoseconds (CRI-O's Created annotation) as ns since the epoch; 0 if unparsable."""
    head, _, frac = text.partition(".")
    digits = "".join(c for c in frac if c.isdigit())
    zone = frac[len(digits):] if frac else head[19:]
    try:
        stamp = datetime.fromisoformat(head[:19] + (zone.replace("Z", "+00:00") or "+00:00"))
    except ValueError:
        return 0
    return int(stamp.timestamp()) * 1_000_000_000 + int((digits or "0")[:9].ljust(9, "0"))


class BundleStore:
    """Reads the state directories of containerd and CRI-O; safe to share, caches hold immutable values."""

    def __init__(self, state_dirs: tuple[Path, ...] | list[Path] = DEFAULT_STATE_DIRS) -> None:
        self.state_dirs = tuple(Path(d) for d in state_dirs)
        self._specs: dict[str, tuple[_StatKey, Bundle | None]] = {}

    def scan(self) -> Scan:
        bundles: dict[str, Bundle] = {}
        available = False
        seen: set[str] = set()
        for state in self.state_dirs:
            for found, ok in (self._containerd(state, seen), self._crio(state, seen)):
                available |= ok
                for b in found:
                    bundles.setdefault(b.id, b)
        # Forget the specs of bundles that are gone, so churn cannot grow the cache without bound.
        self._specs = {path: entry for path, entry in self._specs.items() if path in seen}
        return Scan(tuple(bundles.values()), available)

    def find(self, container_id: str) -> Bundle | None:
        """One container's bundle, by id, without a scan."""
        candidates = [(f"{state}/{task_dir}/{_CRI_NAMESPACE}/{container_id}/config.json", "containerd")
                      for state in self.state_dirs for task_dir in _TASK_DIRS]
        candidates += [(f"{state}/{_CRIO_CONTAINERS}/{container_id}/userdata/config.json", "cri-o")
                       for state in self.state_dirs]
        for path, runtime in candidates:
            key = _stat_key(path)
            if key is not None and "/" not in container_id:
                return self._spec(path, key, container_id, runtime)
        return None

    # -- containerd -------------------------------------------------------------------------
    def _containerd(self, state: Path, seen: set[str]) -> tuple[list[Bundle], bool]:
        found: list[Bundle] = []
        available = False
        for task_dir in _TASK_DIRS:
            try:
                entries = list(os.scandir(f"{state}/{task_dir}/{_CRI_NAMESPACE}"))
            except FileNotFoundError:
                available |= os.path.isdir(f"{state}/{task_dir}")  # containerd without CRI tasks yet
                continue
            except OSError:
                continue
            available = True
            found.extend(self._specs_of(entries, "config.json", "containerd", seen))
        return found, available

    # -- CRI-O ------------------------------------------------------------------------------
    def _crio(self, state: Path, seen: set[str]) -> tuple[list[Bundle], bool]:
        try:
            entries = list(os.scandir(f"{state}/{_CRIO_CONTAINERS}"))
        except OSError:
            return [], False
        return self._specs_of(entries, "userdata/config.json", "cri-o", seen), True

    def _specs_of(self, entries: list[os.DirEntry[str]], config: str, runtime: str,
                  seen: set[str]) -> list[Bundle]:
        found = []
        for entry in entries:
            path = f"{entry.path}/{config}"
            seen.add(path)
            key = _stat_key(path)
            bundle = self._spec(path, key, entry.name, runtime) if key else None
            if bundle is not None:
                found.append(bundle)
        return found

    def _spec(self, path: str, key: _StatKey, container_id: str, runtime: str) -> Bundle | None:
        cached = self._specs.get(path)
        if cached and cached[0] == key:
            return cached[1]
        try:
            with open(path, "rb") as f:
                spec = json.load(f)
        except (OSError, ValueError):
            return None
        bundle = bundle_from_spec(spec, container_id, runtime) if isinstance(spec, dict) else None
        if bundle is not None:
            # The pid file sits next to config.json; CRI-O's stays after the container exits.
            pid_file = Path(path).with_name("init.pid" if runtime == "containerd" else "pidfile")
            bundle = replace(bundle, pid_file=pid_file)
        self._specs[path] = (key, bundle)
        return bundle


def _stat_key(path: str) -> _StatKey | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino
