"""How fast the stand-in starts and stops, and how soon a pod runs: `python -m testbed.cluster.bench`.

The baseline in the same run is a bare stdlib HTTPS server started and stopped the same way, so
the ratio shows what the stand-in adds. Needs root and the lab for the kubelet figures.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from testbed.cluster import tls
from testbed.cluster.standin import TWO_NODES, Cluster
from testbed.lab import runtime
from testbed.lab.config import LabConfig


def _bare_server() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    httpd.socket = tls.credentials().server_context().wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _median_ms(fn: Callable[[], None], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _cluster(lab_cfg: LabConfig | None) -> Callable[[], None]:
    def run() -> None:
        with Cluster(lab_cfg, nodes=TWO_NODES):
            pass
    return run


def _pod_running(lab_cfg: LabConfig) -> float:
    with Cluster(lab_cfg) as cluster:
        start = time.perf_counter()
        cluster.registry.create("bench", {"metadata": {"name": "bench-standin"}, "spec": {"containers": [
            {"name": "app", "image": "busybox", "command": ["sleep", "3600"]}]}})
        while (cluster.store.must_get("pods", "bench", "bench-standin")["status"].get("phase")) != "Running":
            time.sleep(0.005)
        return (time.perf_counter() - start) * 1000


def main() -> int:
    tls.credentials()  # made once per process; not part of any figure
    runs = 20
    bare = _median_ms(_bare_server, runs)
    api_only = _median_ms(_cluster(None), runs)
    print(f"start+stop, API server only (2 nodes): {api_only:7.1f} ms   bare HTTPS server: {bare:6.1f} ms   "
          f"ratio {api_only / bare:5.1f}x")
    cfg = LabConfig()
    if not runtime.is_up(cfg):
        print("lab is not up: skipping the kubelet figures (hack/lab up)")
        return 0
    with_kubelets = _median_ms(_cluster(cfg), 5)
    print(f"start+stop, with 2 kubelets on the lab:  {with_kubelets:7.1f} ms   ratio {with_kubelets / bare:5.1f}x")
    running = statistics.median(_pod_running(cfg) for _ in range(3))
    print(f"create pod -> status Running (sandbox + 1 container): {running:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
