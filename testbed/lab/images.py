"""Lab container images, built locally as OCI image layouts because no registry is reachable.

Every image is one layer around busybox-static. Tars are byte-for-byte reproducible (fixed
mtimes, sorted entries) so their digests never change and re-importing them is a no-op.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
REPO = "nsinspect.local"

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "labuser:x:1000:1000:Lab User:/home/labuser:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\nlabgroup:x:1000:\nnogroup:x:65534:\n"


@dataclass(frozen=True)
class ImageSpec:
    """What goes into one lab image."""

    name: str  # full reference, e.g. nsinspect.local/tools:lab
    entrypoint: list[str]
    # "full": /bin/busybox plus every applet as a symlink and a small /etc.
    # "distroless": one static binary at /app/sleep, no shell, no /etc.
    flavour: str = "full"
    env: list[str] = field(default_factory=lambda: ["PATH=/bin"])


TOOLS = ImageSpec(f"{REPO}/tools:lab", ["/bin/sh"])
PAUSE = ImageSpec(f"{REPO}/pause:lab", ["/bin/sleep", "2147483647"])
DISTROLESS = ImageSpec(f"{REPO}/distroless:lab", ["/app/sleep", "2147483647"], flavour="distroless", env=[])
ALL_IMAGES = (TOOLS, PAUSE, DISTROLESS)


def _applets() -> list[str]:
    out = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True).stdout
    return sorted({a for a in out.split() if a and a != "busybox"})


def _add(tar: tarfile.TarFile, name: str, *, data: bytes | None = None, mode: int = 0o644,
         kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.type = kind
    info.mode = mode
    info.linkname = link
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def build_layer(spec: ImageSpec) -> bytes:
    """The image's single layer as an uncompressed, reproducible tar."""
    busybox = BUSYBOX.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("dev", "proc", "sys", "tmp"):
            _add(tar, d, kind=tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755)
        if spec.flavour == "distroless":
            _add(tar, "app", kind=tarfile.DIRTYPE, mode=0o755)
            _add(tar, "app/sleep", data=busybox, mode=0o755)
        else:
            for d in ("bin", "etc", "home", "home/labuser", "root"):
                _add(tar, d, kind=tarfile.DIRTYPE, mode=0o755)
            _add(tar, "bin/busybox", data=busybox, mode=0o755)
            for applet in _applets():
                _add(tar, f"bin/{applet}", kind=tarfile.SYMTYPE, mode=0o777, link="busybox")
            _add(tar, "etc/passwd", data=PASSWD.encode())
            _add(tar, "etc/group", data=GROUP.encode())
            _add(tar, "etc/hostname", data=b"lab\n")
    return buf.getvalue()


def _blob(blobs: dict[str, bytes], data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def build_oci_archive(spec: ImageSpec) -> bytes:
    """An OCI image-layout tar that `ctr images import` accepts."""
    blobs: dict[str, bytes] = {}
    layer = build_layer(spec)
    layer_desc = _blob(blobs, layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": spec.entrypoint, "Env": spec.env, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    }
    config_desc = _blob(blobs, _dumps(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_desc}],
    }
    manifest_desc = _blob(blobs, _dumps(manifest))
    tag = spec.name.rsplit(":", 1)[1]
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            **manifest_desc,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": spec.name, "org.opencontainers.image.ref.name": tag},
        }],
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "oci-layout", data=_dumps({"imageLayoutVersion": "1.0.0"}))
        _add(tar, "index.json", data=_dumps(index))
        _add(tar, "blobs", kind=tarfile.DIRTYPE, mode=0o755)
        _add(tar, "blobs/sha256", kind=tarfile.DIRTYPE, mode=0o755)
        for digest, data in sorted(blobs.items()):
            _add(tar, f"blobs/sha256/{digest.split(':', 1)[1]}", data=data)
    return buf.getvalue()


def import_images(address: str, workdir: Path, specs: tuple[ImageSpec, ...] = ALL_IMAGES) -> list[str]:
    """Build and import each image into containerd's k8s.io namespace; returns what was imported."""
    ctr = shutil.which("ctr") or "/usr/bin/ctr"
    present = subprocess.run(
        [ctr, "--address", address, "-n", "k8s.io", "images", "list", "-q"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    done = []
    for spec in specs:
        if spec.name in present:
            continue
        archive = workdir / (spec.name.replace("/", "_").replace(":", "_") + ".tar")
        archive.write_bytes(build_oci_archive(spec))
        subprocess.run(
            [ctr, "--address", address, "-n", "k8s.io", "images", "import", str(archive)],
            check=True, capture_output=True, text=True,
        )
        archive.unlink()
        done.append(spec.name)
    return done
