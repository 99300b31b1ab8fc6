"""Churn for the load scenario: short-lived processes at a steady rate, a lowered `kernel.pid_max`
so PIDs are reused within seconds, and lab pods that come and go. Everything is undone on exit."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from testbed.lab.config import LabConfig
from testbed.lab.pods import ContainerSpec, Lab, LabPod, PodSpec
from testbed.reliability.truth import Truth, pod_truth

log = logging.getLogger(__name__)
PID_MAX = Path("/proc/sys/kernel/pid_max")

# Forks children that exit at once, `rate` per second, until SIGTERM; prints how many it made and
# how often the PIDs it got wrapped around (went down).
_FORKER = """
import os, signal, sys, time
rate, made, wraps, last, stop = float(sys.argv[1]), 0, 0, 0, False
def done(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, done)
start = time.monotonic()
while not stop:
    if made >= rate * (time.monotonic() - start):
        time.sleep(0.002)
        continue
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    made, wraps, last = made + 1, wraps + (pid < last), pid
print(made, wraps, flush=True)
"""


@contextmanager
def lowered_pid_max(value: int) -> Iterator[int]:
    """`kernel.pid_max` set to `value` (never below the highest PID in use plus room to churn:
    the kernel then wraps around, so exited PIDs are handed out again), restored afterwards."""
    before = int(PID_MAX.read_text())
    in_use = max(int(name) for name in os.listdir("/proc") if name.isdigit())
    value = min(before, max(value, 512))
    PID_MAX.write_text(str(value))
    log.info("pid_max %d -> %d (highest pid in use %d)", before, value, in_use)
    try:
        yield value
    finally:
        PID_MAX.write_text(str(before))


class Forker:
    """Short-lived processes at `rate` per second, in a process of its own."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.made = self.wraps = 0
        self.seconds = 0.0
        self._proc: subprocess.Popen[str] | None = None
        self._started = 0.0

    def __enter__(self) -> Forker:
        if self.rate <= 0:
            return self
        self._proc = subprocess.Popen([sys.executable, "-c", _FORKER, str(self.rate)], stdout=subprocess.PIPE,
                                      text=True, start_new_session=True)
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGTERM)
        out, _ = self._proc.communicate(timeout=10)
        self.seconds = time.monotonic() - self._started
        self.made, self.wraps = (int(n) for n in out.split())


class PodChurn(threading.Thread):
    """Creates a lab pod, takes its truth, lets it live a little, removes it; again until stopped.
    While the runtime is down it waits. Truths of every pod it made stay in `truths`."""

    def __init__(self, cfg: LabConfig, lifetime: float = 1.0, prefix: str = "churn") -> None:
        super().__init__(name="pod-churn", daemon=True)
        self.cfg, self.lifetime, self.prefix = cfg, lifetime, prefix
        self.truths: dict[str, Truth] = {}  # container id -> truth
        self.uids: dict[str, str] = {}  # pod name -> uid
        self.created = self.removed = self.failures = 0
        self.live: list[str] = []  # names of the pods that exist now (the clients' targets)
        self._quit = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self) -> PodChurn:
        if self.lifetime > 0:  # else no pods come and go
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def names(self) -> list[str]:
        with self._lock:
            return list(self.live)

    def stop(self) -> None:
        self._quit.set()
        if self.is_alive():
            self.join(60)

    def run(self) -> None:
        with Lab(self.cfg) as lab:
            number = 0
            while not self._quit.is_set():
                number += 1
                spec = PodSpec(f"{self.prefix}-{number:04d}", (ContainerSpec("app"),), namespace="churn")
                try:
                    pod = lab.create_pod(spec)
                except Exception as err:  # the runtime is down: try again later
                    self.failures += 1
                    log.debug("cannot create %s: %s", spec.name, err)
                    self._quit.wait(0.5)
                    continue
                self._made(pod)
                self._quit.wait(self.lifetime)
                self._remove(lab, pod)

    def _made(self, pod: LabPod) -> None:
        try:
            truths = pod_truth(self.cfg, pod)
        except (OSError, RuntimeError) as err:  # an init that died at once: its answers go unchecked
            log.warning("no truth for %s: %s", pod.name, err)
            truths = {}
        with self._lock:
            self.truths.update(truths)
            self.uids[pod.name] = pod.uid
            self.live.append(pod.name)
            self.created += 1

    def _remove(self, lab: Lab, pod: LabPod) -> None:
        with self._lock:
            self.live.remove(pod.name)
        for _ in range(120):  # while the runtime is down it cannot: try again for a minute
            try:
                lab.remove_pod(pod)
                self.removed += 1
                return
            except Exception as err:
                log.debug("cannot remove %s yet: %s", pod.name, err)
                self.failures += 1
                time.sleep(0.5)
        log.warning("gave up removing %s (the lab's `down` will)", pod.name)
