"""Bring one lab containerd up and tear it down again, leaving no process, mount, netns or cgroup.

Everything here is idempotent: `up` on a running lab only fills in what is missing, `down` on a
stopped lab only sweeps up leftovers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from testbed.lab import cgroups, images
from testbed.lab.config import LabConfig

DEBIAN_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "busybox-static", "util-linux", "iproute2")
MNT_DETACH = 2

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def missing_packages(packages: tuple[str, ...] = DEBIAN_PACKAGES) -> list[str]:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *packages],
        capture_output=True, text=True,
    ).stdout
    installed = {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}
    return [p for p in packages if p not in installed]


def install_packages(say: Say = _quiet, packages: tuple[str, ...] = DEBIAN_PACKAGES) -> None:
    """apt-get install whichever of `packages` (Debian names) is missing; the lab's own by default."""
    missing = missing_packages(packages)
    if not missing:
        return
    say(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def containerd_pid(cfg: LabConfig) -> int | None:
    """The lab's containerd, if it runs; the pid file is checked against the process's argv."""
    try:
        pid = int(cfg.pid_file.read_text())
        cmdline = psutil.Process(pid).cmdline()
    except (OSError, ValueError, psutil.Error):
        return None
    return pid if str(cfg.config_file) in cmdline else None


def is_up(cfg: LabConfig) -> bool:
    return containerd_pid(cfg) is not None and cfg.socket.is_socket()


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def _wait_ready(cfg: LabConfig, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    from nsinspect.agent.resolve.cri import CriClient  # noqa: PLC0415 - needs the venv, not `down`

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"containerd exited with {proc.returncode}; see {cfg.log_file}")
        if cfg.socket.is_socket():
            with contextlib.suppress(Exception), CriClient(cfg.endpoint, timeout=1.0) as cri:
                if cri.runtime_ready():
                    return
        time.sleep(0.05)
    raise RuntimeError(f"containerd did not become ready in {timeout:.0f}s; see {cfg.log_file}")


def up(cfg: LabConfig, say: Say = _quiet) -> None:
    install_packages(say)
    for d in (cfg.root, cfg.run, cfg.cni_conf_dir, cfg.cni_data_dir):
        d.mkdir(parents=True, exist_ok=True)
    changed = _write_if_changed(cfg.config_file, cfg.containerd_toml(images.PAUSE.name))
    changed |= _write_if_changed(cfg.cni_conf_dir / "10-nsinspect-lab.conflist", cfg.cni_conflist())
    if changed:
        say(f"wrote {cfg.config_file} and the CNI config in {cfg.cni_conf_dir}")
    if changed and containerd_pid(cfg) is not None:
        say("config changed: restarting containerd")
        stop_containerd(cfg, say)
    if containerd_pid(cfg) is None:
        log = open(cfg.log_file, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            ["containerd", "--config", str(cfg.config_file)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        cfg.pid_file.write_text(str(proc.pid))
        _wait_ready(cfg, proc)
        say(f"started containerd (pid {proc.pid}) on {cfg.endpoint}")
    else:
        say(f"containerd already running (pid {containerd_pid(cfg)}) on {cfg.endpoint}")
    imported = images.import_images(str(cfg.socket), cfg.run)
    say(f"imported images: {', '.join(imported)}" if imported else "images already imported")


def stop_containerd(cfg: LabConfig, say: Say = _quiet) -> None:
    """Stop only containerd: shims and containers keep running, as on a node whose runtime died."""
    pid = containerd_pid(cfg)
    if pid is None:
        return
    proc = psutil.Process(pid)
    proc.terminate()
    try:
        proc.wait(10)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    say(f"stopped containerd (pid {pid})")


def _shims(cfg: LabConfig) -> list[psutil.Process]:
    """Shims started by this lab's containerd; they name its socket in their argv."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["name"] and proc.info["name"].startswith("containerd-shim") and str(cfg.socket) in cmd:
            found.append(proc)
    return found


def _kill_cgroup_members(cfg: LabConfig) -> int:
    killed = 0
    for top in cgroups.everywhere(cfg.cgroup_root):
        for pid in cgroups.processes(top):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


def _remove_cgroups(cfg: LabConfig) -> int:
    return sum(cgroups.remove_tree(top) for top in cgroups.everywhere(cfg.cgroup_root))


def _lab_mounts(cfg: LabConfig) -> list[str]:
    mine = (str(cfg.root) + "/", str(cfg.run) + "/")
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(mine):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def _unmount_all(cfg: LabConfig) -> int:
    import ctypes  # noqa: PLC0415

    libc = ctypes.CDLL(None, use_errno=True)
    count = 0
    for _ in range(5):  # stacked mounts need more than one pass
        points = _lab_mounts(cfg)
        if not points:
            break
        for point in points:
            if libc.umount2(point.encode(), MNT_DETACH) == 0:
                count += 1
    return count


def down(cfg: LabConfig, say: Say = _quiet, purge: bool = False) -> None:
    """Remove every pod, stop containerd and sweep up what a crash could have left behind."""
    if is_up(cfg):
        from testbed.lab.pods import Lab  # noqa: PLC0415

        with Lab(cfg) as lab:
            removed = lab.remove_all_pods()
        say(f"removed {removed} pod(s)" if removed else "no pods to remove")
    stop_containerd(cfg, say)
    shims = _shims(cfg)
    for shim in shims:
        with contextlib.suppress(psutil.Error):
            shim.kill()
    psutil.wait_procs(shims, timeout=5)
    if shims:
        say(f"killed {len(shims)} leftover shim(s)")
    killed = _kill_cgroup_members(cfg)
    if killed:
        say(f"killed {killed} leftover container process(es)")
    unmounted = _unmount_all(cfg)
    if unmounted:
        say(f"unmounted {unmounted} mount(s) (netns and rootfs)")
    removed = _remove_cgroups(cfg)
    if removed:
        say(f"removed {removed} cgroup(s) under {cfg.cgroup_root}")
    if subprocess.run(["ip", "link", "show", cfg.bridge], capture_output=True).returncode == 0:
        subprocess.run(["ip", "link", "delete", cfg.bridge], check=True)
        say(f"deleted bridge {cfg.bridge}")
    if cfg.run.exists():
        shutil.rmtree(cfg.run)
        say(f"removed {cfg.run}")
    if purge and cfg.root.exists():
        shutil.rmtree(cfg.root)
        say(f"removed {cfg.root}")
    say("lab is down")
