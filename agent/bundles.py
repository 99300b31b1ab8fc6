"""The container runtime's own records on disk: which pod sandboxes and containers exist, and their PIDs.

When the CRI socket is down the containers keep running under their shims, and the runtime's
state directory still says what they are:
- containerd: each task's OCI bundle, `<state>/io.containerd.runtime.v2.task/k8s.io/<id>/` with
  `config.json` (annotations name pod and container) and `init.pid`. A task exists only while its
  container runs (or exited while containerd was down), so containers that were created but never
  started, or exited earlier, are read from containerd's metadata store `<root>/io.containerd.
  metadata.v1.bolt/meta.db` (opened read-only, never locked) with their CRI status file next to it.
  The root is found through any bundle's `work` link.
- CRI-O: `<runroot>/overlay-containers/<id>/userdata/` with `config.json` and `pidfile`, for every
  container until it is removed.
Parsed specs are cached by (path, mtime, size, inode), so a scan costs a directory listing and a stat
per container of the node. Nothing here checks that a PID is still the process it names: callers do.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIRS: tuple[Path, ...] = (Path("/run/containerd"), Path("/run/containers/storage"))
# Where a containerd with default settings keeps its root, for when no task is left to point at it.
_DEFAULT_ROOTS = {Path("/run/containerd"): Path("/var/lib/containerd")}
_TASK_DIRS = ("io.containerd.runtime.v2.task", "io.containerd.runtime.v1.linux")
_CRI_NAMESPACE = "k8s.io"
_META_DB = "io.containerd.metadata.v1.bolt/meta.db"
_CRI_CONTAINERS = "io.containerd.grpc.v1.cri/containers"
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
    created_at: int = 0  # ns since the epoch, 0 when not recorded where we read
    # init.pid (containerd) or pidfile (CRI-O, written when the container starts); None: no task,
    # i.e. never started or exited before containerd went down.
    pid_file: Path | None = None
    status_file: Path | None = None  # containerd CRI's checkpoint of created/started/finished times

    def namespace_path(self, oci_type: str) -> str | None:
        """The path the spec joins for `oci_type` ("" for a new namespace), None when it has no entry."""
        return next((path for t, path in self.namespaces if t == oci_type), None)


@dataclass(frozen=True)
class CriStatus:
    """What containerd's CRI plugin checkpointed about a container (times in ns since the epoch)."""

    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0


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


def read_status(bundle: Bundle) -> CriStatus | None:
    if bundle.status_file is None:
        return None
    try:
        raw = json.loads(bundle.status_file.read_text())
        return CriStatus(int(raw.get("CreatedAt", 0)), int(raw.get("StartedAt", 0)),
                         int(raw.get("FinishedAt", 0)), int(raw.get("ExitCode", 0)))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


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
    if runtime == "containerd":
        kind = ann.get(_CTRD + "container-type")
        if kind not in ("sandbox", "container"):
            return None
        return Bundle(container_id, runtime, kind == "sandbox", str(ann.get(_CTRD + "sandbox-id", "")),
                      str(ann.get(_CTRD + "sandbox-namespace", "")), str(ann.get(_CTRD + "sandbox-name", "")),
                      str(ann.get(_CTRD + "sandbox-uid", "")), str(ann.get(_CTRD + "container-name", "")),
                      str(ann.get(_CTRD + "image-name", "")), namespaces, hostname)
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
                  hostname or str(ann.get(_CRIO + "HostName", "")), _rfc3339_ns(str(ann.get(_CRIO + "Created", ""))))


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
        self._metas: dict[str, tuple[_StatKey, tuple[Bundle, ...]]] = {}
        self._merged: dict[Path, tuple[object, list[Bundle]]] = {}
        self._roots: dict[Path, Path] = {}

    def scan(self) -> Scan:
        bundles: dict[str, Bundle] = {}
        available = False
        for state in self.state_dirs:
            for found, ok in (self._containerd(state), self._crio(state)):
                available |= ok
                for b in found:
                    bundles.setdefault(b.id, b)
        return Scan(tuple(bundles.values()), available)

    # -- containerd -------------------------------------------------------------------------
    def _containerd(self, state: Path) -> tuple[list[Bundle], bool]:
        seen: list[tuple[str, str, _StatKey]] = []  # (id, bundle dir, stat of config.json)
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
            seen.extend((e.name, e.path, key) for e in entries if (key := _stat_key(f"{e.path}/config.json")))
        if state not in self._roots:
            self._learn_root(state, [d for _, d, _ in seen])
        root = self._roots.get(state) or _DEFAULT_ROOTS.get(state)
        db = f"{root}/{_META_DB}" if root else ""
        fingerprint = (tuple(seen), db, _stat_key(db) if db else None)
        cached = self._merged.get(state)
        if cached and cached[0] == fingerprint:
            return cached[1], available
        tasks: dict[str, Bundle] = {}
        for cid, bundle_dir, key in seen:
            bundle = self._spec(f"{bundle_dir}/config.json", key, cid, "containerd")
            if bundle is not None:
                tasks[cid] = replace(bundle, pid_file=Path(bundle_dir, "init.pid"))
        merged = []
        for meta in self._meta(db) if db else ():
            status = Path(f"{root}/{_CRI_CONTAINERS}/{meta.id}/status") if not meta.is_sandbox else None
            task = tasks.pop(meta.id, None)
            merged.append(replace(task or meta, created_at=meta.created_at, status_file=status))
        merged.extend(tasks.values())
        self._merged[state] = (fingerprint, merged)
        return merged, available

    def _learn_root(self, state: Path, bundle_dirs: list[str]) -> None:
        """containerd links each v2 bundle's `work` to <root>/io.containerd.runtime.v2.task/<ns>/<id>."""
        for d in bundle_dirs:
            with contextlib.suppress(OSError, IndexError):
                self._roots[state] = Path(os.readlink(f"{d}/work")).parents[2]
                return

    def _meta(self, db: str) -> tuple[Bundle, ...]:
        key = _stat_key(db)
        if key is None:
            return ()
        cached = self._metas.get(db)
        if cached and cached[0] == key:
            return cached[1]
        found = tuple(_read_meta_db(Path(db)))
        self._metas[db] = (key, found)
        return found

    # -- CRI-O ------------------------------------------------------------------------------
    def _crio(self, state: Path) -> tuple[list[Bundle], bool]:
        try:
            entries = list(os.scandir(f"{state}/{_CRIO_CONTAINERS}"))
        except OSError:
            return [], False
        found = []
        for entry in entries:
            config = f"{entry.path}/userdata/config.json"
            key = _stat_key(config)
            bundle = self._spec(config, key, entry.name, "cri-o") if key else None
            if bundle is not None:
                # The pidfile appears when the container starts, and stays after it exits.
                found.append(bundle)
        return found, True

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
        if bundle is not None and runtime == "cri-o":
            bundle = replace(bundle, pid_file=Path(path).with_name("pidfile"))
        self._specs[path] = (key, bundle)
        return bundle


def _stat_key(path: str) -> _StatKey | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


# -- containerd's metadata store (bbolt) ------------------------------------------------------
_BOLT_MAGIC = 0xED0CDAED
_BRANCH, _LEAF, _BUCKET = 0x01, 0x02, 0x01
_GO_EPOCH_OFFSET = 62135596800  # seconds from year 1 (Go's zero time) to 1970


class _BoltError(Exception):
    """The file is not a bbolt database we understand, or changed under us."""


def _read_meta_db(db: Path) -> Iterator[Bundle]:
    """Every CRI sandbox and container in containerd's metadata store, without its task's PID.

    The spec is stored as a protobuf Any holding the OCI spec's JSON; its createdat is Go's
    binary time. A concurrent writer may reuse pages, so the read is retried if the transaction moved.
    """
    for _ in range(3):
        try:
            with open(db, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                bolt = _Bolt(buf)
                found = list(_cri_containers(bolt))
                if _Bolt(buf).txid == bolt.txid:
                    yield from found
                    return
        except (OSError, ValueError, _BoltError, struct.error):
            return


def _cri_containers(bolt: _Bolt) -> Iterator[Bundle]:
    containers = bolt.path(b"v1", _CRI_NAMESPACE.encode(), b"containers")
    for cid, flags, value in containers:
        if not flags & _BUCKET:
            continue
        fields = {k: (f, v) for k, f, v in bolt.bucket(value)}
        spec_raw = fields.get(b"spec", (0, b""))[1]
        try:
            spec = json.loads(_any_value(spec_raw))
        except ValueError:
            continue
        bundle = bundle_from_spec(spec, cid.decode(), "containerd") if isinstance(spec, dict) else None
        if bundle is not None:
            yield replace(bundle, created_at=_go_time_ns(fields.get(b"createdat", (0, b""))[1]))


def _any_value(raw: bytes) -> bytes:
    """The `value` (field 2) of a serialized google.protobuf.Any."""
    i = 0
    while i < len(raw):
        tag, i = _varint(raw, i)
        if tag & 7 != 2:
            raise ValueError("unexpected wire type")
        size, i = _varint(raw, i)
        if tag >> 3 == 2:
            return raw[i:i + size]
        i += size
    raise ValueError("no value")


def _varint(raw: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = raw[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def _go_time_ns(raw: bytes) -> int:
    """Go's time.MarshalBinary (version 1 or 2) as ns since the epoch; 0 if unknown."""
    if len(raw) < 13 or raw[0] not in (1, 2):
        return 0
    sec, nsec = struct.unpack_from(">qi", raw, 1)
    return (int(sec) - _GO_EPOCH_OFFSET) * 1_000_000_000 + int(nsec)


class _Bolt:
    """Just enough of bbolt's on-disk format to walk nested buckets read-only."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        metas = []
        first = self._meta(0)
        page_size = first[2] if first else mmap.PAGESIZE
        for meta in (first, self._meta(page_size)):
            if meta is not None:
                metas.append(meta)
        if not metas:
            raise _BoltError("no valid meta page")
        _, _, self.page_size, self.root, self.txid = max(metas, key=lambda m: m[4])

    def _meta(self, offset: int) -> tuple[int, int, int, int, int] | None:
        if offset + 16 + 64 > len(self.buf):
            return None
        magic, version, page_size, _flags, root, _seq, _free, _pgid, txid, checksum = struct.unpack_from(
            "<IIIIQQQQQQ", self.buf, offset + 16)
        if magic != _BOLT_MAGIC or version != 2 or checksum != _fnv64a(self.buf[offset + 16:offset + 72]):
            return None
        return magic, version, page_size, root, txid

    def _items(self, buf: mmap.mmap | bytes, offset: int, depth: int = 0) -> Iterator[tuple[bytes, int, bytes]]:
        if depth > 32 or offset + 16 > len(buf):
            raise _BoltError("bad page")
        _, flags, count, _ = struct.unpack_from("<QHHI", buf, offset)
        for i in range(count):
            elem = offset + 16 + 16 * i
            if flags & _BRANCH:
                _, _, child = struct.unpack_from("<IIQ", buf, elem)
                yield from self._items(self.buf, child * self.page_size, depth + 1)
            elif flags & _LEAF:
                item_flags, pos, ksize, vsize = struct.unpack_from("<IIII", buf, elem)
                start = elem + pos
                if start + ksize + vsize > len(buf):
                    raise _BoltError("element out of bounds")
                yield bytes(buf[start:start + ksize]), item_flags, bytes(buf[start + ksize:start + ksize + vsize])
            else:
                raise _BoltError(f"unexpected page flags {flags:#x}")

    def bucket(self, value: bytes) -> Iterator[tuple[bytes, int, bytes]]:
        """Items of the bucket whose header is `value` (inline buckets carry their page after it)."""
        (root,) = struct.unpack_from("<Q", value, 0)
        return self._items(value, 16) if root == 0 else self._items(self.buf, root * self.page_size)

    def path(self, *names: bytes) -> Iterator[tuple[bytes, int, bytes]]:
        items: Iterator[tuple[bytes, int, bytes]] = self._items(self.buf, self.root * self.page_size)
        for name in names:
            value = next((v for k, f, v in items if k == name and f & _BUCKET), None)
            if value is None:
                return iter(())
            items = self.bucket(value)
        return items


def _fnv64a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h
