"""Attacks on exec from inside the pod, each a test that fails if it works: a pod (or a pods/exec
caller) must never get more through nsinspect exec than CRI exec gives. Found by an attacker's
review of the confinement work; run against the real agent and the lab's containerd.

1. A container's init stacks an allow-all seccomp filter: the session must still get the runtime's
   (the first of the chain, index 0 for PTRACE_SECCOMP_GET_FILTER).
2. A pod with CAP_SYS_PTRACE takes the reaper's status socket and forges "entered" naming a process
   tree of the node's: the agent must not kill it (it believes only the kernel's SCM_CREDENTIALS).
3. A pod with CAP_SYS_PTRACE looks through the reaper: its exe must not be the node's Python (a
   sealed memfd copy), its memory must not hold other sessions' plans, its environment not the agent's.
4. A pod at its pids limit makes the enterer's fork fail, with a `coding:` line planted at the
   agent's source path in the container: no code of the image's may run in the enterer.
5. The container's init changes its own environment: the session gets the spec's, as CRI exec does.
6. A pod's spec environment (ENV, sourced by an interactive sh) must not reach a --privileged session,
   which runs as the node's root.
7. A pod with CAP_SYS_ADMIN and CAP_SYS_PTRACE opens the files the reaper maps through
   /proc/<reaper>/map_files: a forked Python mapped the node's libc and ld.so, writable. The reaper is
   now a static program exec'd from a sealed memfd (agent/enter/reaper.c): it maps no file of the node's.
"""

from __future__ import annotations

import contextlib
import encodings
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from nsinspect.agent.enter import enterer as enter_module
from testbed.execclient import Live, run, start
from testbed.lab.config import LabConfig
from testbed.lab.pods import ContainerSpec, Lab, LabPod, PodSpec
from tests import attack, test_exec
from tests.test_exec import Agent, eventually

pytestmark = pytest.mark.lab
agent, toolbox_dir = test_exec.agent, test_exec.toolbox_dir
UNIQUE = uuid.uuid4().hex[:6]
WAIT_FOR = "while [ ! -x /tmp/{0} ]; do sleep 0.05; done; exec /tmp/{0} {1}"

ALLOW_ALL = r"""
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {  /* no_new_privs, an allow-all filter on top of the runtime's, exec argv[1..] */
    struct sock_filter f[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog p = {1, f};
    (void)argc;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &p)) return 1;
    execv(argv[1], argv + 1);
    return 1;
}
"""

RACE = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
/* race REAPER ENTERER TRIES: catch the next session's reaper (the next pid here), take its status socket
   with pidfd_getfd and send the agent a forged "entered" before the enterer's own */
int main(int argc, char **argv) {
    char msg[256];
    if (argc < 4) return 2;
    int len = snprintf(msg, sizeof msg, "{\"event\": \"entered\", \"enterer\": %s, \"reaper\": %s, "
                       "\"namespaces\": [], \"confined\": [], \"missing\": []}", argv[2], argv[1]);
    for (int t = 0; t < atoi(argv[3]); t++) {
        pid_t c = fork();
        if (c == 0) _exit(0);
        waitpid(c, NULL, 0);
        int pfd, sent = 0;
        time_t begin = time(NULL);
        while ((pfd = syscall(SYS_pidfd_open, c + 1, 0)) < 0)
            if (time(NULL) - begin > 20) return 1;
        for (int spin = 0; spin < 2000 && !sent; spin++)
            for (int fd = 3; fd < 16 && !sent; fd++) {
                int s = syscall(SYS_pidfd_getfd, pfd, fd, 0), type = 0;
                socklen_t l = sizeof type;
                if (s < 0) continue;
                if (!getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &l) && type == SOCK_SEQPACKET
                    && send(s, msg, len, 0) == len)
                    sent = 1;
                close(s);
            }
        printf("try %d: %s\n", t, sent ? "forged" : "missed");
        fflush(stdout);
        close(pfd);
        usleep(300000);
    }
    return 0;
}
"""

MEMSCAN = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {  /* memscan PID NEEDLE: count NEEDLE in PID's memory */
    char path[64], line[512];
    int hits = 0;
    if (argc < 3) return 2;
    snprintf(path, sizeof path, "/proc/%s/maps", argv[1]);
    FILE *m = fopen(path, "r");
    snprintf(path, sizeof path, "/proc/%s/mem", argv[1]);
    int fd = open(path, O_RDONLY);
    if (!m || fd < 0) { printf("hits=-1\n"); return 0; }
    while (fgets(line, sizeof line, m)) {
        unsigned long a, b;
        char perm[5];
        if (sscanf(line, "%lx-%lx %4s", &a, &b, perm) != 3 || perm[0] != 'r') continue;
        char *buf = malloc(b - a);
        ssize_t got = buf ? pread(fd, buf, b - a, a) : -1;
        for (ssize_t i = 0; got > 0 && i + (ssize_t)strlen(argv[2]) <= got; i++)
            if (!memcmp(buf + i, argv[2], strlen(argv[2]))) hits++;
        free(buf);
    }
    printf("hits=%d\n", hits);
    return 0;
}
"""

FILL = r"""
#include <unistd.h>
int main(void) {  /* keep the pod at its pids limit */
    for (;;) {
        pid_t p = fork();
        if (p == 0) { pause(); _exit(0); }
        if (p < 0) usleep(200);
    }
}
"""


def compiled(lab_cfg: LabConfig, tmp_path_factory: pytest.TempPathFactory, name: str, source: str) -> Path:
    src = tmp_path_factory.mktemp("src") / f"review_{name}.c"
    src.write_text(source)
    return attack.static_binary(src, lab_cfg)


def install(pod: LabPod, container: str, binary: Path, name: str) -> None:
    tmp = Path(f"/proc/{pod[container].pid}/root/tmp")
    shutil.copy(binary, tmp / f"{name}.part")
    os.rename(tmp / f"{name}.part", tmp / name)


@contextmanager
def node_victims() -> Iterator[list[int]]:
    """Two sleeping processes of the node's, below a shell of ours: what the agent must never kill."""
    shell = subprocess.Popen(["bash", "-c", "sleep 1000 & sleep 1000 & wait"])
    assert eventually(lambda: len(psutil.Process(shell.pid).children()) == 2)
    kids = [c.pid for c in psutil.Process(shell.pid).children()]
    try:
        yield [shell.pid, *kids]
    finally:
        for pid in (*kids, shell.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
        shell.wait()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- 1 -------------------------------------------------------------------------------------------------
def test_a_container_init_cannot_replace_the_runtimes_seccomp_filter(
        agent: Agent, lab: Lab, lab_cfg: LabConfig, tmp_path_factory: pytest.TempPathFactory) -> None:
    binary = compiled(lab_cfg, tmp_path_factory, "allowall", ALLOW_ALL)
    init = ContainerSpec("app", command=("/bin/sh", "-c", WAIT_FOR.format("allowall", "/bin/sleep 100000")),
                         seccomp="RuntimeDefault")
    with lab.pod(PodSpec(f"attack-seccomp-{UNIQUE}", (init,))) as pod:
        install(pod, "app", binary, "allowall")
        assert eventually(lambda: "Seccomp_filters:\t2" in Path(f"/proc/{pod['app'].pid}/status").read_text())
        argv = ("unshare", "-U", "-r", "id")
        expected = lab.exec(pod["app"].id, *argv)
        assert expected.exit_code != 0 and b"Operation not permitted" in expected.stderr  # CRI exec: still confined
        got = run(agent.stub, start(pod.name, *argv), timeout=30)
        assert got.exit is not None and got.exit.code != 0, (
            f"the session ran without the runtime's seccomp filter: {got.stdout!r}")


# -- 2 -------------------------------------------------------------------------------------------------
def test_a_ptrace_capable_pod_cannot_make_the_agent_kill_node_processes(
        agent: Agent, lab: Lab, lab_cfg: LabConfig, tmp_path_factory: pytest.TempPathFactory) -> None:
    binary = compiled(lab_cfg, tmp_path_factory, "race", RACE)
    with lab.pod(PodSpec(f"attack-race-{UNIQUE}", (ContainerSpec("app", capabilities=("SYS_PTRACE",)),))) as pod, \
            node_victims() as (shell, *kids):
        install(pod, "app", binary, "race")
        out: dict[str, object] = {}
        tries = 10
        attacker = threading.Thread(target=lambda: out.update(r=lab.exec(
            pod["app"].id, "/tmp/race", str(shell), str(os.getpid()), str(tries), timeout=60)))
        attacker.start()
        time.sleep(0.5)
        for _ in range(tries):
            with contextlib.suppress(Exception):
                run(agent.stub, start(pod.name, "true"), timeout=30)
            if not all(alive(k) for k in kids):
                break
            time.sleep(0.7)
        attacker.join(70)
        assert all(alive(k) for k in kids), "the agent SIGKILLed node processes a pod named in a forged 'entered'"


# -- 3 -------------------------------------------------------------------------------------------------
def test_a_ptrace_capable_pod_reaches_nothing_of_the_node_through_the_reaper(
        agent: Agent, lab: Lab, lab_cfg: LabConfig, tmp_path_factory: pytest.TempPathFactory) -> None:
    scanner = compiled(lab_cfg, tmp_path_factory, "memscan", MEMSCAN)
    secret = f"other-tenant-{uuid.uuid4().hex}"
    with lab.pod(PodSpec(f"attack-ptrace-{UNIQUE}", (ContainerSpec("app", capabilities=("SYS_PTRACE",)),))) as pod:
        install(pod, "app", scanner, "memscan")
        for _ in range(3):  # another caller's sessions, into another pod
            run(agent.stub, start("plain", "true", env={"DB_PASSWORD": secret}), timeout=30)
        live = Live(agent.stub, start(pod.name, "sleep", "30"))
        try:
            time.sleep(1.0)
            script = ("for p in /proc/[0-9]*; do [ \"$(cat $p/comm)\" = nsinspect-exec ] && R=${p#/proc/}; done; "
                      "stat -L -c 'exe %d:%i' /proc/$R/exe; echo >> /proc/$R/exe && echo WROTE-EXE; "
                      f"/tmp/memscan $R {secret}; tr '\\0' '\\n' < /proc/$R/environ")
            seen = lab.exec(pod["app"].id, "sh", "-c", script).stdout.decode()
        finally:
            live.cancel()
    python = os.stat(os.path.realpath(sys.executable))
    assert f"exe {python.st_dev}:{python.st_ino}" not in seen, f"the reaper's exe is the node's Python: {seen}"
    assert "exe " in seen and "WROTE-EXE" not in seen, f"the reaper's exe could be written: {seen}"
    assert "hits=0" in seen, f"a pod process read another session's environment in the reaper's memory: {seen}"
    assert "KUBE" not in seen and "HOME=" not in seen, f"the agent's environment is in the reaper's: {seen}"


# -- 4 -------------------------------------------------------------------------------------------------
def test_the_enterer_never_runs_code_from_the_containers_image(
        agent: Agent, lab: Lab, lab_cfg: LabConfig, tmp_path_factory: pytest.TempPathFactory) -> None:
    filler = compiled(lab_cfg, tmp_path_factory, "fill", FILL)
    init = ContainerSpec("app", command=("/bin/sh", "-c", WAIT_FOR.format("fill", "")))
    with lab.pod(PodSpec(f"attack-pids-{UNIQUE}", (init,), pids_limit=8)) as pod, node_victims() as (_, victim, _2):
        root = Path(f"/proc/{pod['app'].pid}/root")
        install(pod, "app", filler, "fill")
        assert eventually(lambda: (lab.pod_cgroup(pod) / "pids.current").read_text().strip() == "8")
        (root / "tmp/victim").write_text(str(victim))
        # What a hostile image ships: a file at the agent's own source path, and a "codec" module.
        for module in (enter_module.__file__, os.path.join(os.path.dirname(enter_module.__file__), "spawn.py")):
            planted = root / str(module).lstrip("/")
            planted.parent.mkdir(parents=True, exist_ok=True)
            planted.write_text("# -*- coding: review_pwn -*-\n" + "# from the image\n" * 900)
        codec = root / encodings.__path__[0].lstrip("/") / "review_pwn.py"
        codec.parent.mkdir(parents=True, exist_ok=True)
        codec.write_text(textwrap.dedent("""\
            import os
            open("/tmp/pwned", "w").write("image code in the enterer: node pid %d\\n" % os.getpid())
            os.kill(int(open("/tmp/victim").read()), 9)
            """))
        with contextlib.suppress(Exception):
            run(agent.stub, start(pod.name, "true"), timeout=30)
        time.sleep(0.5)
        pwned = (root / "tmp/pwned").read_text() if (root / "tmp/pwned").exists() else ""
        assert not pwned and alive(victim), f"{pwned.strip()}; node process {victim} alive: {alive(victim)}"


# -- 5 -------------------------------------------------------------------------------------------------
def test_the_command_gets_the_containers_environment_not_the_inits_live_one(agent: Agent, lab: Lab) -> None:
    hijack = ("mkdir -p /tmp/evil && printf '#!/bin/sh\\necho hijacked\\n' > /tmp/evil/id && chmod +x /tmp/evil/id; "
              "exec env PATH=/tmp/evil:/bin /bin/sleep 100000")
    with lab.pod(PodSpec(f"attack-env-{UNIQUE}", (ContainerSpec("app", command=("/bin/sh", "-c", hijack)),))) as pod:
        assert eventually(lambda: b"/tmp/evil" in Path(f"/proc/{pod['app'].pid}/environ").read_bytes())
        expected = lab.exec(pod["app"].id, "id").stdout
        got = run(agent.stub, start(pod.name, "id"), timeout=30).stdout
        assert got == expected, f"CRI exec: {expected!r}; nsinspect: {got!r}"


# -- 6 -------------------------------------------------------------------------------------------------
def test_a_pods_environment_does_not_run_its_code_in_a_privileged_tools_session(agent: Agent, lab: Lab) -> None:
    plant = ("printf 'echo PWNED-uid=$(id -u) $(grep CapEff /proc/self/status)\\n' > /tmp/evil.sh; "
             "exec sleep 100000")
    app = ContainerSpec("app", command=("/bin/sh", "-c", plant), env=(("ENV", "/target/tmp/evil.sh"),))
    with lab.pod(PodSpec(f"attack-privenv-{UNIQUE}", (app,))) as pod:
        assert eventually(lambda: lab.exec(pod["app"].id, "test", "-f", "/tmp/evil.sh").exit_code == 0)
        # what an administrator types to look at a pod with the trusted toolbox: an interactive shell
        got = run(agent.stub, start(pod.name, "sh", "-i", "-c", "true", tools=True, privileged=True), timeout=30)
        seen = got.stdout + got.stderr
        assert got.exit is not None
        assert b"PWNED" not in seen, f"the pod's script ran as the node's root in a privileged session: {seen!r}"


# -- 7 -------------------------------------------------------------------------------------------------
MAPFILES = (
    "for p in /proc/[0-9]*; do [ \"$(cat $p/comm)\" = nsinspect-exec ] && R=${p#/proc/}; done; "
    "echo reaper=$R; "
    "for f in /proc/$R/map_files/*; do t=$(readlink $f); case \"$t\" in /memfd*|'') continue;; esac; "
    "if (exec 3>>\"$f\") 2>/dev/null; then echo WRITABLE $t; else echo ro $t; fi; done"
)


def test_a_pod_cannot_open_the_nodes_files_through_the_reapers_map_files(agent: Agent, lab: Lab) -> None:
    spec = ContainerSpec("app", capabilities=("SYS_ADMIN", "SYS_PTRACE"))
    with lab.pod(PodSpec(f"attack-mapfiles-{UNIQUE}", (spec,))) as pod:
        live = Live(agent.stub, start(pod.name, "sleep", "30"))
        try:
            live.wait_started()
            time.sleep(0.3)
            seen = lab.exec(pod["app"].id, "sh", "-c", MAPFILES).stdout.decode()
        finally:
            live.cancel()
    assert "reaper=" in seen and "reaper=\n" not in seen, seen
    assert "WRITABLE" not in seen, f"a pod opened the node's files for writing through the reaper's map_files:\n{seen}"
