"""The loopback-only HTTP endpoint that serves the agent's metrics (--metrics-listen) to Prometheus."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import start_http_server

from .app import is_loopback
from .metrics import Metrics


def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) on a loopback address, else ValueError. Port 0: any free one.

    Loopback only, as for the agent's gRPC TCP listeners: the metrics name pods' RPCs and callers'
    failures, and the agent is root on the node. In a cluster, scrape them from inside the pod."""
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid --metrics-listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    if not is_loopback(host):
        raise ValueError(f"refusing to serve metrics on {listen}: loopback addresses only "
                         "(127.0.0.1, ::1 or localhost)")
    return host, int(port)


def listen_flag(listen: str) -> str:
    """argparse's type for --metrics-listen: a bad address stops the agent at once, saying why."""
    try:
        parse_listen(listen)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return listen


@dataclass
class MetricsServer:
    url: str  # http://HOST:PORT/metrics, with the port bound
    stop: Callable[[], None]


def serve_metrics(metrics: Metrics, listen: str) -> MetricsServer:
    """Serve `metrics` over HTTP on loopback `listen` (see parse_listen) from a daemon thread."""
    host, port = parse_listen(listen)
    httpd, thread = start_http_server(port, host, registry=metrics.registry)
    bound = httpd.server_address[1]
    shown = f"[{host}]" if ":" in host else host

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        if thread is not threading.current_thread():
            thread.join(timeout=2)

    return MetricsServer(f"http://{shown}:{bound}/metrics", stop)
