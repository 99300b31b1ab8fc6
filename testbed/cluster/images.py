"""Which lab image a pod's `image:` runs, since no registry can be reached from the lab.

Public names map onto the two lab images by repository, whatever the registry prefix, tag or
digest (documented in testbed/cluster/README.md):

- `busybox`, `alpine`, `ubuntu`, `debian`, `nicolaka/netshoot` and the lab's own `nsinspect.local/tools`
  -> TOOLS (busybox with every applet, /etc/passwd with labuser 1000);
- `gcr.io/distroless/*`, `distroless` and the lab's `nsinspect.local/distroless` -> DISTROLESS
  (`/app/sleep` only).

Anything else is an image the lab does not have: the kubelet reports `ErrImagePull`.
"""

from __future__ import annotations

from testbed.lab.images import DISTROLESS, PAUSE, TOOLS, ImageSpec

TOOLS_REPOS = frozenset({"busybox", "library/busybox", "alpine", "library/alpine", "ubuntu", "library/ubuntu",
                         "debian", "library/debian", "nicolaka/netshoot", "nsinspect.local/tools", "tools"})
DISTROLESS_REPOS = frozenset({"distroless", "nsinspect.local/distroless"})
_REGISTRIES = ("docker.io/", "index.docker.io/", "registry-1.docker.io/", "registry.k8s.io/", "k8s.gcr.io/")


def repository(ref: str) -> str:
    """`docker.io/library/busybox:1.36@sha256:...` -> `library/busybox`; registry prefixes dropped."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: name.rfind(":")]
    for prefix in _REGISTRIES:
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def resolve(ref: str) -> ImageSpec | None:
    """The lab image that stands in for `ref`, or None if the lab has nothing for it."""
    if ref in (TOOLS.name, DISTROLESS.name, PAUSE.name):
        return {TOOLS.name: TOOLS, DISTROLESS.name: DISTROLESS, PAUSE.name: PAUSE}[ref]
    repo = repository(ref)
    if repo in TOOLS_REPOS:
        return TOOLS
    if repo in DISTROLESS_REPOS or repo.startswith("gcr.io/distroless/"):
        return DISTROLESS
    return None
