"""The agent restarted during Exec sessions: stopped (SIGTERM, as the kubelet does on a rollout) or
killed (SIGKILL, as the OOM killer does), then started again. The sessions' clients must get a clear
error, and none of the sessions' processes may outlive the restart.

The sessions run `sh -c 'sleep N & sleep N+1'` (a child in the background as well) with marker
durations, so whatever is left is found by its command line alone.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from nsinspect.proto import exec_pb2_grpc
from nsinspect.proto.rpcerror import rpc_status
from testbed.agentproc import agent_process, wait_healthy
from testbed.execclient import Live, run, start
from testbed.lab.config import LabConfig
from testbed.reliability.agentstate import marked

MARK = 4171  # sleep 4171.., a duration nothing else uses


@dataclass
class Restart:
    how: str  # "SIGTERM" or "SIGKILL"
    sessions: int
    running_before: int  # marked processes while the sessions ran
    client_errors: list[str] = field(default_factory=list)  # "CODE: details" per session
    cli_exit: int = 0
    cli_stderr: str = ""
    left_between: int = -1  # marked processes after the agent exited, before it started again
    left_after: int = -1  # marked processes once the new agent serves (and 5 s later at most)
    gone_after_s: float = 0.0  # from the new agent serving until none were left
    works_again: bool = False

    def ok(self) -> bool:
        return (self.left_after == 0 and self.works_again and self.cli_exit != 0
                and (self.how != "SIGTERM" or self.left_between == 0)
                and len(self.client_errors) == self.sessions
                and all(e.startswith("UNAVAILABLE") for e in self.client_errors))

    def text(self) -> str:
        codes = sorted({e.split(":")[0] for e in self.client_errors})
        return (f"restart by {self.how}: {self.sessions} sessions ({self.running_before} processes); clients got "
                f"{', '.join(codes) or 'nothing'}; CLI exit {self.cli_exit}: {self.cli_stderr.strip()!r}; "
                f"left while it was down: {self.left_between}; after the restart: {self.left_after} "
                f"(gone {self.gone_after_s:.2f} s after it served); new sessions work: {self.works_again}")


def restart_during_sessions(cfg: LabConfig, pod: str, how: signal.Signals, sessions: int, workdir: Path,
                            nsinspect: str) -> Restart:
    first = MARK + (0 if how == signal.SIGTERM else 100)
    sock = workdir / f"agent-{how.name}.sock"
    with agent_process(cfg, sock, log=workdir / "agent.log") as agent, grpc.insecure_channel(agent.address) as channel:
        stub = exec_pb2_grpc.ExecStub(channel)
        lives = []
        for i in range(sessions - 1):
            live = Live(stub, start(pod, "sh", "-c", f"sleep {first + 2 * i} & sleep {first + 2 * i + 1}"))
            live.wait_started()
            lives.append(live)
        n = 2 * (sessions - 1)
        cli = subprocess.Popen([nsinspect, "exec", "--agent", agent.address, pod, "--", "sh", "-c",
                                f"echo started; sleep {first + n} & sleep {first + n + 1}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert cli.stdout is not None and cli.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 5
        while len(marked(range(first, first + 2 * sessions))) < 2 * sessions and time.monotonic() < deadline:
            time.sleep(0.05)
        result = Restart(how.name, sessions, len(marked(range(first, first + 2 * sessions))))

        agent.process.send_signal(how)
        agent.process.wait(15)
        for live in lives:
            try:
                live.wait_exit()
                result.client_errors.append("OK: the session ended normally")
            except grpc.RpcError as err:
                code, details = rpc_status(err)
                result.client_errors.append(f"{getattr(code, 'name', 'UNKNOWN')}: {details}")
        _, result.cli_stderr = cli.communicate(timeout=15)
        result.cli_exit = cli.returncode
        result.client_errors.append("UNAVAILABLE: (the CLI)" if cli.returncode else "OK: the CLI")

        time.sleep(0.5)  # what a stopping agent tears down is gone by now
        result.left_between = len(marked(range(first, first + 2 * sessions)))
        log = (workdir / "agent.log").open("ab")
        again = subprocess.Popen(agent.argv, stdout=log, stderr=log)
        try:
            wait_healthy(agent.address, again)
            served = time.monotonic()
            while (left := len(marked(range(first, first + 2 * sessions)))) and time.monotonic() - served < 5:
                time.sleep(0.05)
            result.left_after, result.gone_after_s = left, time.monotonic() - served
            with grpc.insecure_channel(agent.address) as fresh:
                done = run(exec_pb2_grpc.ExecStub(fresh), start(pod, "echo", "again"), timeout=30)
                result.works_again = done.stdout == b"again\n" and done.exit is not None and done.exit.code == 0
        finally:
            again.terminate()
            again.wait(15)
            log.close()
    for proc in marked(range(first, first + 2 * sessions)):  # never leave them behind, whatever was found
        proc.kill()
    return result


def main(cfg: LabConfig, pod: str, sessions: int, nsinspect: str) -> list[Restart]:
    with tempfile.TemporaryDirectory(prefix="nsinspect-restart-") as tmp:
        return [restart_during_sessions(cfg, pod, how, sessions, Path(tmp), nsinspect)
                for how in (signal.SIGTERM, signal.SIGKILL)]
