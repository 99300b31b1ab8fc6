"""The CLI starts fast because it imports nothing heavy before a command runs (checked by what is
imported, not by a clock); `kubectl nsinspect` is the same program."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HEAVY = ("grpc", "google.protobuf", "kubernetes", "pyroute2", "psutil", "yaml")


def test_help_imports_nothing_heavy() -> None:
    code = ("import sys\nfrom nsinspect.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_console_scripts_exist_and_answer() -> None:
    bindir = Path(sys.executable).parent
    for name in ("nsinspect", "kubectl-nsinspect", "nsinspect-agent"):
        exe = shutil.which(name, path=str(bindir))
        assert exe, f"{name} is not installed"
        result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and "usage:" in result.stdout
    plugin = subprocess.run([str(bindir / "kubectl-nsinspect"), "--help"], capture_output=True, text=True)
    assert plugin.stdout.startswith("usage: kubectl nsinspect")


def test_direct_agent_commands_do_not_load_the_kubernetes_client() -> None:
    """With --agent nothing asks the API server: its client (about 0.4 s to import) stays out. The
    agent address is one nobody serves; the command fails after its imports, which is what counts."""
    for command in (["ns", "plain"], ["ps", "plain"], ["nsmap"], ["exec", "plain", "--", "true"]):
        code = ("import sys\nfrom nsinspect.cli.main import main\n"
                f"try:\n    main({[*command[:2], '--agent', 'unix:///nonexistent/agent.sock', *command[2:]]!r})\n"
                "except SystemExit:\n    pass\n"
                "print(sorted(m for m in ('kubernetes', 'yaml') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
        assert out.strip().splitlines()[-1] == "[]", command
