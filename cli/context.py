"""What one run of the CLI knows before any command starts: built once in main from the flags every
command shares, and handed to the command and the plumbing it uses (target, fanout).

It says how to reach the agent (--agent ADDR directly, or through Kubernetes), which pod was named,
and the output format and timeout. The Kubernetes client and the credentials for the agent are made
on first use and kept: `--agent` commands never load the kubernetes client (about 0.4 s to import),
and a command that asks the API server twice (debug) loads the kubeconfig once.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .agentclient import Credentials
    from .kube import Kube


@dataclass
class Context:
    agent: str = ""  # --agent ADDR (or $NSINSPECT_AGENT); "" means through Kubernetes
    output: str = "text"  # text, wide, json or yaml
    timeout: float = 10.0  # per request, in seconds
    kubeconfig: str | None = None
    kube_context: str | None = None  # --context
    agent_namespace: str = "nsinspect-system"  # where the agent DaemonSet runs
    pod: str = ""  # the pod named on the command line (POD), "" when none
    uid: str = ""  # --uid
    namespace_flag: str | None = None  # -n, when given
    token: str = ""  # --token (or $NSINSPECT_TOKEN)
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    _kube: Kube | None = field(default=None, repr=False)
    _credentials: Credentials | None = field(default=None, repr=False)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Context:
        """The shared flags of the parsed command line (commands without them get the defaults)."""
        def flag(name: str, default: str = "") -> str:
            return str(getattr(args, name, None) or default)

        return cls(agent=flag("agent"), output=flag("output", "text"), timeout=float(getattr(args, "timeout", 10.0)),
                   kubeconfig=getattr(args, "kubeconfig", None), kube_context=getattr(args, "context", None),
                   agent_namespace=flag("agent_namespace", "nsinspect-system"), pod=flag("pod"), uid=flag("uid"),
                   namespace_flag=getattr(args, "namespace", None) or None, token=flag("token"),
                   tls_ca=flag("tls_ca"), tls_cert=flag("tls_cert"), tls_key=flag("tls_key"))

    @property
    def wide(self) -> bool:
        return self.output == "wide"

    @property
    def machine(self) -> bool:
        """JSON or YAML rather than text."""
        return self.output in ("json", "yaml")

    def kube(self) -> Kube:
        """The client for the chosen kubeconfig and context, loaded on first use."""
        if self._kube is None:
            from . import kube  # noqa: PLC0415 - the kubernetes client is slow to import

            self._kube = kube.connect(self.kubeconfig, self.kube_context)
        return self._kube

    def namespace(self) -> str:
        """-n, else "default" with --agent (no context to take it from), else the context's."""
        return self.namespace_flag or ("default" if self.agent else self.kube().namespace)

    def credentials(self) -> Credentials:
        """What to show the agent (agentclient.credentials): through Kubernetes the kubeconfig user's
        token when --token is not given. Made on first use, so errors keep their order."""
        if self._credentials is None:
            from .agentclient import credentials  # noqa: PLC0415 - grpc is not needed before a command runs

            self._credentials = credentials(self.token, self.tls_ca, self.tls_cert, self.tls_key,
                                            kube=None if self.agent else self.kube())
        return self._credentials
