"""The layout stays readable: one job per package, arrows one way, no loops, no module too big.

The agent's packages rank from values to composition; a module may import its own package and
packages ranked below it, never beside or above (observe and enter are peers: neither imports the
other). The graph is read from the source, lazy imports inside functions included, so a loop
hidden in a function still counts. Every module also imports alone in a fresh interpreter.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"agent": "nsinspect.agent", "cli": "nsinspect.cli"}
RANK = {"core": 0, "linux": 1, "procfs": 2, "resolve": 3, "observe": 4, "enter": 4, "server": 5, "main": 6}
WIRE_ALLOWED = ("resolve.cri", "server", "main")  # who may import grpc or nsinspect.proto in the agent
MAX_LINES = 330  # "about 300"


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # what it imports, dotted (a module, or a name in one)
    names: tuple[str, ...]
    relative: bool
    line: int


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            dotted = ".".join((package, *parts)).removesuffix(".__init__")
            found[dotted] = path
    return found


def imports(module: str, path: Path) -> Iterator[Import]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, (), False, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            yield Import(module, base, tuple(a.name for a in node.names), bool(node.level), node.lineno)


MODULES = modules()
IMPORTS = [i for m, p in MODULES.items() for i in imports(m, p)]


def targets(i: Import) -> list[str]:
    """The modules of ours an import loads: `from pkg import mod` names a module, too."""
    found = [t for n in i.names if (t := f"{i.target}.{n}") in MODULES]
    return found or ([i.target] if i.target in MODULES else [])


def agent_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["nsinspect", "agent"] else None


def where(i: Import) -> str:
    return f"{MODULES[i.module].relative_to(ROOT)}:{i.line}"


def test_arrows_point_one_way() -> None:
    wrong = []
    for i in IMPORTS:
        ours, theirs = agent_package(i.module), None
        for target in targets(i):
            theirs = agent_package(target)
            if ours is None or theirs is None or ours == theirs:
                continue
            if RANK[theirs] >= RANK[ours]:
                wrong.append(f"{where(i)}: {ours} imports {theirs} ({target})")
    assert not wrong, "imports against the arrows core <- linux <- procfs <- resolve <- observe|enter <- server " \
                      "<- main:\n" + "\n".join(wrong)


def test_only_the_runtime_client_and_the_server_speak_grpc() -> None:
    def wire(target: str) -> bool:
        return target.split(".", maxsplit=1)[0] in ("grpc", "grpc_health", "grpc_reflection", "google") \
            or target.startswith("nsinspect.proto")

    wrong = [f"{where(i)}: {i.target}" for i in IMPORTS if agent_package(i.module) is not None and wire(i.target)
             and not i.module.removeprefix("nsinspect.agent.").startswith(WIRE_ALLOWED)]
    assert not wrong, "\n".join(wrong)


def test_cli_and_agent_never_import_each_other() -> None:
    wrong = [f"{where(i)}: {i.target}" for i in IMPORTS
             if (i.module.startswith("nsinspect.cli") and i.target.startswith("nsinspect.agent"))
             or (i.module.startswith("nsinspect.agent") and i.target.startswith("nsinspect.cli"))]
    assert not wrong, "\n".join(wrong)


def test_imports_inside_a_part_are_relative() -> None:
    wrong = [f"{where(i)}: {i.target}" for i in IMPORTS if not i.relative
             and any(i.module.startswith(p + ".") and i.target.startswith(p) for p in FOLDERS.values())]
    assert not wrong, "use relative imports inside agent/ and cli/:\n" + "\n".join(wrong)


def test_no_private_name_crosses_a_module() -> None:
    wrong = [f"{where(i)}: {n} from {i.target}" for i in IMPORTS if i.target in MODULES
             for n in i.names if n.startswith("_") and not n.startswith("__")]
    assert not wrong, "\n".join(wrong)


def test_no_import_loops() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in IMPORTS:
        graph[i.module].update(t for t in targets(i) if t != i.module and MODULES[t].name != "__init__.py")
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        pytest.fail("an import loop (lazy imports count): " + " -> ".join(err.args[1]))


def test_modules_stay_small() -> None:
    big = {str(p.relative_to(ROOT)): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_every_package_says_what_it_owns() -> None:
    silent = [str(p.relative_to(ROOT)) for p in MODULES.values()
              if p.name == "__init__.py" and not ast.get_docstring(ast.parse(p.read_text()))]
    assert not silent, silent


CONVENTIONS = {"main", "add_flags"}  # the same job in each module that has one: its entry, its flags


def test_no_name_means_two_things() -> None:
    """A class name is one thing in the whole tree; a public function's, one thing in its part."""
    seen: dict[tuple[str, str], list[str]] = {}
    for module, path in MODULES.items():
        part = module.split(".")[1]
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                seen.setdefault(("class", node.name), []).append(module)
            elif isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and node.name not in CONVENTIONS:
                seen.setdefault((part, node.name), []).append(module)
    twice = {name: where for (_, name), where in seen.items() if len(where) > 1}
    assert not twice, twice


@pytest.mark.parametrize("package", sorted({m.rpartition(".")[0] if MODULES[m].name != "__init__.py" else m
                                            for m in MODULES}))
def test_each_module_imports_alone(package: str) -> None:
    """Each module in a fresh interpreter, so an import that works only after another (a loop the
    graph missed, a module that relies on a sibling being loaded first) fails here."""
    members = [m for m in MODULES if m == package or (m.rpartition(".")[0] == package and
               MODULES[m].name != "__init__.py" and not m.endswith("__main__"))]

    def alone(module: str) -> tuple[str, str]:
        run = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
        return module, run.stderr.strip().splitlines()[-1] if run.returncode else ""

    with ThreadPoolExecutor(8) as pool:
        failed = {m: err for m, err in pool.map(alone, members) if err}
    assert not failed, failed


def test_the_testbed_never_imports_the_tests() -> None:
    wrong = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in sorted((ROOT / "testbed").rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text()))
             if (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tests")
             or (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "tests" for a in node.names))]
    assert not wrong, wrong
