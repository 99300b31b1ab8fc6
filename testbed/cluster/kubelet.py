"""The kubelet half: makes the pods bound to its node real on the lab's containerd, through CRI,
the way the kubelet does, and reports what the runtime says in each pod's status.

One sync loop per node, level-triggered: it wakes on every store change (or every `period`),
creates sandboxes and containers that are missing (ephemeral ones included), reads container
states from CRI, writes `status` when it changed, and finishes graceful deletions. Namespace
options come from the pod spec (hostNetwork, hostPID, hostIPC, shareProcessNamespace), users from
securityContext; an ephemeral container with targetContainerName gets pid TARGET unless the pod
shares its pid namespace or uses the host's. On `stop()` every sandbox it created is removed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc

from nsinspect.proto import cri_pb2 as cri
from nsinspect.proto import cri_pb2_grpc as cri_grpc
from testbed.cluster import images
from testbed.cluster.registry import UNMANAGED, now
from testbed.cluster.status import ApiError
from testbed.cluster.store import Store
from testbed.lab.config import LabConfig
from testbed.lab.pods import ContainerSpec, Lab, LabPod, PodSpec

Json = dict[str, Any]


@dataclass(frozen=True)
class KubeletOptions:
    ignore_target: bool = False  # a runtime that ignores pid TARGET: the debugger gets the sandbox's pid ns
    start_ephemeral: bool = True  # False: ephemeral containers are accepted but never started
    period: float = 0.25  # seconds between runtime polls when nothing changes


@dataclass
class _Pod:
    """What the kubelet holds for one pod it runs."""

    lab: LabPod
    started: str  # status.startTime
    ip: str = ""  # the sandbox's address, read once
    failures: dict[str, tuple[str, str]] = field(default_factory=dict)  # container -> (waiting reason, message)
    final: dict[str, Json] = field(default_factory=dict)  # terminated containers never change again


def _ts(ns: int) -> str | None:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ns else None


def _sc(obj: Json) -> Json:
    return obj.get("securityContext") or {}


class Kubelet:
    def __init__(self, node: str, store: Store, lab_cfg: LabConfig, host_ip: str,
                 options: KubeletOptions | None = None) -> None:
        self.node = node
        self.store = store
        self.host_ip = host_ip
        self.options = options or KubeletOptions()
        self.lab = Lab(lab_cfg)
        self._image_channel = grpc.insecure_channel(lab_cfg.endpoint)
        self._images = cri_grpc.ImageServiceStub(self._image_channel)
        self._pods: dict[str, _Pod] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"kubelet-{node}", daemon=True)
        self.errors: list[str] = []  # unexpected sync failures, for tests to assert on
        self.synced = 0  # the store resourceVersion the last completed sync started from

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop syncing and remove every sandbox this kubelet created."""
        self._stop.set()
        self._thread.join(30)
        with self._lock:
            pods, self._pods = list(self._pods.values()), {}
        for pod in pods:
            with contextlib.suppress(grpc.RpcError):
                self.lab.remove_pod(pod.lab)
        self.lab.close()
        self._image_channel.close()

    def sandbox(self, uid: str) -> LabPod | None:
        with self._lock:
            pod = self._pods.get(uid)
            return pod.lab if pod else None

    def _loop(self) -> None:
        seen = -1
        while not self._stop.is_set():
            seen = self.store.wait(seen, self.options.period)
            try:
                self.sync()
                self.synced = seen
            except Exception as err:  # keep the node alive, report to tests
                self.errors.append(f"{type(err).__name__}: {err}")

    def wait_synced(self, timeout: float = 10.0) -> None:
        """Block until a whole sync has run after every write made so far (test helper)."""
        target = self.store.resource_version
        deadline = time.monotonic() + timeout
        while self.synced < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"kubelet {self.node} did not sync to resourceVersion {target}")
            time.sleep(0.02)

    # -- the sync ---------------------------------------------------------------------------
    def sync(self) -> None:
        mine, _ = self.store.list("pods", None, lambda p: (p["spec"].get("nodeName") == self.node and UNMANAGED
                                                           not in (p["metadata"].get("annotations") or {})))
        live = set()
        for pod in mine:
            if self._stop.is_set():
                return
            uid = pod["metadata"]["uid"]
            if pod["metadata"].get("deletionTimestamp"):
                self._kill(uid)
                with contextlib.suppress(ApiError):
                    self.store.remove("pods", pod["metadata"]["namespace"], pod["metadata"]["name"], expect_uid=uid)
                continue
            live.add(uid)
            state = self._pods.get(uid) or self._run_sandbox(pod)
            if state is None:
                continue
            self._ensure_containers(pod, state)
            self._write_status(pod, state)
        with self._lock:
            gone = [uid for uid in self._pods if uid not in live]
        for uid in gone:
            self._kill(uid)

    def _kill(self, uid: str) -> None:
        with self._lock:
            pod = self._pods.pop(uid, None)
        if pod is not None:
            with contextlib.suppress(grpc.RpcError):
                self.lab.remove_pod(pod.lab)

    def _run_sandbox(self, pod: Json) -> _Pod | None:
        spec, meta = pod["spec"], pod["metadata"]
        pid = "NODE" if spec.get("hostPID") else "POD" if spec.get("shareProcessNamespace") else "CONTAINER"
        lab_spec = PodSpec(meta["name"], (), meta["namespace"], meta["uid"],
                           network="NODE" if spec.get("hostNetwork") else "POD", pid=pid,
                           ipc="NODE" if spec.get("hostIPC") else "POD")
        try:
            lab_pod = self.lab.create_pod(lab_spec)
        except grpc.RpcError as err:
            self.errors.append(f"RunPodSandbox {meta['namespace']}/{meta['name']}: {err}")
            return None
        state = _Pod(lab_pod, now())
        with self._lock:
            self._pods[meta["uid"]] = state
        return state

    def _container_spec(self, pod: Json, c: Json, ephemeral: bool, state: _Pod) -> ContainerSpec | tuple[str, str]:
        """The CRI side of one container, or the waiting (reason, message) that keeps it from starting."""
        image = images.resolve(c.get("image") or "")
        if image is None or not self._image_present(image.name):
            return "ErrImagePull", (f'failed to pull and unpack image "{c.get("image")}": the lab has no such image '
                                    "and no registry can be reached")
        command = tuple(c.get("command") or image.entrypoint) + tuple(c.get("args") or ())
        pod_sc, sc = _sc(pod["spec"]), _sc(c)
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        env = tuple((e["name"], str(e.get("value", ""))) for e in c.get("env") or [] if "name" in e)
        pid, target = None, None
        shared = pod["spec"].get("hostPID") or pod["spec"].get("shareProcessNamespace")
        if ephemeral and c.get("targetContainerName") and not shared:
            if self.options.ignore_target:
                pid = "POD"
            else:
                pid, target = "TARGET", c["targetContainerName"]
                if target not in state.lab.containers:
                    return "CreateContainerError", f'target container "{target}" is not running'
        return ContainerSpec(c["name"], image.name, command, uid, gid, pid, target, None, env,
                             bool(sc.get("privileged")), stdin=bool(c.get("stdin")))

    def _image_present(self, name: str) -> bool:
        resp = self._images.ImageStatus(cri.ImageStatusRequest(image=cri.ImageSpec(image=name)), timeout=10)
        return bool(resp.image.id)

    def _ensure_containers(self, pod: Json, state: _Pod) -> None:
        wanted = [(c, False) for c in pod["spec"].get("containers") or []]
        if self.options.start_ephemeral:
            wanted += [(c, True) for c in pod["spec"].get("ephemeralContainers") or []]
        for c, ephemeral in wanted:
            name = c["name"]
            if name in state.lab.containers or name in state.failures:
                continue
            spec = self._container_spec(pod, c, ephemeral, state)
            if isinstance(spec, tuple):
                state.failures[name] = spec
                continue
            try:
                state.lab = self.lab.add_container(state.lab, spec)
            except grpc.RpcError as err:
                state.failures[name] = ("CreateContainerError", str(err.details() if hasattr(err, "details")
                                                                    else err))

    # -- status -----------------------------------------------------------------------------
    def _container_status(self, c: Json, state: _Pod, ephemeral: bool = False) -> Json:
        name = c["name"]
        base: Json = {"name": name, "image": c.get("image", ""), "imageID": "", "ready": False, "restartCount": 0,
                      "started": False, "lastState": {}}
        if name in state.final:
            return state.final[name]
        if name in state.failures:
            reason, message = state.failures[name]
            return {**base, "state": {"waiting": {"reason": reason, "message": message}}}
        lab_container = state.lab.containers.get(name)
        if lab_container is None:
            return {**base, "state": {"waiting": {"reason": "ContainerCreating"}}}
        try:
            status, _ = self.lab.cri.container_status(lab_container.id)
        except Exception:  # gone from the runtime: report it as such
            return {**base, "state": {"waiting": {"reason": "ContainerStatusUnknown"}}}
        base.update(containerID=f"containerd://{lab_container.id}", imageID=status.image_ref)
        if status.state == cri.CONTAINER_RUNNING:
            return {**base, "ready": not ephemeral, "started": True,
                    "state": {"running": {"startedAt": _ts(status.started_at)}}}
        if status.state == cri.CONTAINER_EXITED:
            reason = status.reason or ("Completed" if status.exit_code == 0 else "Error")
            terminated = {"exitCode": status.exit_code, "reason": reason, "startedAt": _ts(status.started_at),
                          "finishedAt": _ts(status.finished_at), "containerID": base["containerID"]}
            if status.message:
                terminated["message"] = status.message
            state.final[name] = {**base, "state": {"terminated": terminated}}
            return state.final[name]
        return {**base, "state": {"waiting": {"reason": "ContainerCreating"}}}

    def _write_status(self, pod: Json, state: _Pod) -> None:
        spec, old = pod["spec"], pod.get("status") or {}
        regular = [self._container_status(c, state) for c in spec.get("containers") or []]
        ephemeral = ([self._container_status(c, state, True) for c in spec.get("ephemeralContainers") or []]
                     if self.options.start_ephemeral else [])
        running = [s for s in regular if "running" in s["state"]]
        done = [s for s in regular if "terminated" in s["state"]]
        if regular and len(done) == len(regular):
            failed = any(s["state"]["terminated"]["exitCode"] for s in done)
            phase = "Running" if spec.get("restartPolicy") == "Always" else ("Failed" if failed else "Succeeded")
        elif running and len(running) + len(done) == len(regular):
            phase = "Running"
        else:
            phase = "Pending"
        unready = [s["name"] for s in regular if not s["ready"]]
        ip = self.host_ip if spec.get("hostNetwork") else self._pod_ip(state)
        status: Json = {**old, "phase": phase, "hostIP": self.host_ip, "hostIPs": [{"ip": self.host_ip}],
                        "startTime": state.started, "containerStatuses": regular}
        if ip:
            status.update(podIP=ip, podIPs=[{"ip": ip}])
        if ephemeral:
            status["ephemeralContainerStatuses"] = ephemeral
        previous = {c["type"]: c for c in old.get("conditions") or []}

        def condition(kind: str, ok: bool, reason: str = "", message: str = "") -> Json:
            value = "True" if ok else "False"
            since = previous[kind]["lastTransitionTime"] if previous.get(kind, {}).get("status") == value else now()
            out: Json = {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": since}
            if not ok and reason:
                out.update(reason=reason, message=message)
            return out

        why = f"containers with unready status: [{' '.join(unready)}]"
        status["conditions"] = [
            condition("PodReadyToStartContainers", True), condition("Initialized", True),
            condition("Ready", not unready, "ContainersNotReady", why),
            condition("ContainersReady", not unready, "ContainersNotReady", why),
            condition("PodScheduled", True)]
        if status != old:
            def change(cur: Json) -> Json:
                cur["status"] = status
                return cur
            with contextlib.suppress(ApiError):
                self.store.update("pods", pod["metadata"]["namespace"], pod["metadata"]["name"], change,
                                  expect_uid=pod["metadata"]["uid"])

    def _pod_ip(self, state: _Pod) -> str:
        if not state.ip:
            with contextlib.suppress(Exception):
                state.ip = str(self.lab.cri.sandbox_status(state.lab.sandbox_id)[0].network.ip)
        return state.ip
