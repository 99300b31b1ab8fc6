"""The committed protobuf code matches proto/*.proto (regenerate with hack/gen-proto)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from nsinspect.proto import cri_pb2

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_current() -> None:
    result = subprocess.run([str(ROOT / "hack" / "gen-proto"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cri_subset_keeps_published_numbers() -> None:
    """Spot checks against k8s.io/cri-api runtime.v1: renumbering would break every real runtime."""
    ns = cri_pb2.NamespaceOption.DESCRIPTOR.fields_by_name
    assert (ns["network"].number, ns["pid"].number, ns["ipc"].number, ns["target_id"].number) == (1, 2, 3, 4)
    assert cri_pb2.NamespaceMode.Value("TARGET") == 3
    assert cri_pb2.ContainerStatusRequest.DESCRIPTOR.fields_by_name["verbose"].number == 2
    assert cri_pb2.DESCRIPTOR.package == "runtime.v1"
    assert {s.name for s in cri_pb2.DESCRIPTOR.services_by_name.values()} == {"RuntimeService", "ImageService"}
