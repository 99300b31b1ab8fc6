"""Where one lab instance keeps its files, and the containerd and CNI configs it runs with.

Several instances can run at once (tests bring up a throwaway one to try `down`): each has its
own root, state, socket, bridge and slice of the 127.100.0.0/16 pod range.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

LAB_ROOT = Path("/var/lib/nsinspect-lab")
LAB_RUN = Path("/run/nsinspect-lab")
CNI_BIN = Path("/usr/lib/cni")
POD_SUBNET = "127.100.0.0/16"


@dataclass(frozen=True)
class LabConfig:
    """One lab instance; `slot` picks its bridge and address range (slot 0 is the main lab)."""

    name: str = "lab"
    slot: int = 0

    @property
    def root(self) -> Path:
        return LAB_ROOT / self.name

    @property
    def run(self) -> Path:
        return LAB_RUN / self.name

    @property
    def cache(self) -> Path:
        """Things the tests build once and keep across `down` (e.g. compiled attack programs)."""
        return self.root / "cache"

    @property
    def state(self) -> Path:
        return self.run / "state"

    @property
    def socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    @property
    def config_file(self) -> Path:
        return self.run / "config.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.run / "cni"

    @property
    def cni_data_dir(self) -> Path:
        return self.run / "cni-ipam"

    @property
    def pid_file(self) -> Path:
        return self.run / "containerd.pid"

    @property
    def log_file(self) -> Path:
        return self.run / "containerd.log"

    @property
    def bridge(self) -> str:
        return f"nsilab{self.slot}"

    @property
    def cgroup_root(self) -> str:
        """The cgroup parent of the lab's pods, shaped like the kubelet's cgroupfs driver.

        Never the kubelet's own /kubepods: `down` kills whatever lives under this root.
        """
        return f"/kubepods-{self.name}"

    @property
    def address_range(self) -> tuple[str, str]:
        """Each slot owns 16 /24s of 127.100.0.0/16, so instances never hand out the same address."""
        first = 1 + 16 * self.slot
        return f"127.100.{first}.1", f"127.100.{first + 15}.254"

    def containerd_toml(self, sandbox_image: str) -> str:
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return f"""\
# Written by hack/lab for the nsinspect lab "{self.name}".
version = 2
root = "{self.root / "containerd"}"
state = "{self.state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{self.root / "opt"}"

[{cri}]
  sandbox_image = "{sandbox_image}"
  # The sandbox asks for oom_score_adj -998, which this VM refuses unless it is clamped.
  restrict_oom_score_adj = true
  # Keep the pods' netns mounts in our own state dir, so `down` knows exactly what is ours.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{self.cni_conf_dir}"
  max_conf_num = 1

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
"""

    def cni_conflist(self) -> str:
        start, end = self.address_range
        return json.dumps({
            "cniVersion": "1.0.0",
            "name": f"nsinspect-{self.name}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": False,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(self.cni_data_dir),
                        "ranges": [[{"subnet": POD_SUBNET, "rangeStart": start, "rangeEnd": end}]],
                    },
                },
                {"type": "loopback"},
            ],
        }, indent=2)
