"""``lib`` in layers you can read from the imports (STYLE.md, "For lib", 10).

Every import of every module of ``lib``, module-level and function-level alike, is parsed with ``ast``; an
import of a module in a higher layer, or a cycle among modules, fails. A function-level import that exists
only to dodge a cycle is a cycle, so it counts the same.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib"

# Bottom to top. A module may import modules of its own layer or below, never above.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundations", ("lib", "lib.checks", "lib.book", "lib.data", "lib.train", "lib.stats", "lib.records",
                     "lib.counting", "lib.scratch", "lib.plot", "lib.gradients", "lib.leaderboard", "lib.tuning",
                     "lib.baseline", "lib._versions")),
    ("models", ("lib.models",)),
    ("analysis", ("lib.analysis", "lib.explain", "lib.explore")),
    ("transfer and experiments", ("lib.transfer", "lib.experiments", "lib.drills")),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(LIB.rglob("*.py"))}


def layer_of(name: str) -> int:
    """The layer of a module: that of the longest prefix listed in ``LAYERS``."""
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    if best is None:
        raise KeyError(f"{name} is in no layer of tests/test_layers.py: add it to LAYERS")
    return best[0]


def imported(source: str, package: str) -> set[str]:
    """Every module that ``source`` (a module of ``package``) imports, at any depth of the code:
    ``from lib.x import y`` is ``lib.x.y`` when that is a module of lib, else ``lib.x``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return found


def imports(name: str) -> set[str]:
    """The other lib modules ``name`` imports, and, for a package, its public submodules: a package reaches
    them (``lib.models`` imports every family, ``lib.experiments`` loads each experiment by name), so a
    submodule that imports names from its own package's ``__init__`` closes a cycle."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = {m for m in imported(path.read_text(), package) if m in MODULES and m != name}
    if path.name == "__init__.py" and name != "lib":  # lib's own __init__ loads a submodule when asked
        found |= {m for m in MODULES if m.rpartition(".")[0] == name and not m.rpartition(".")[2].startswith("_")}
    return found


def unit(name: str) -> str:
    """The layer entry a module belongs to (``lib.experiments.degradation`` -> ``lib.experiments``)."""
    prefixes = [p for _, ps in LAYERS for p in ps if p != "lib" and (name == p or name.startswith(p + "."))]
    return max(prefixes, key=len) if prefixes else name


GRAPH = {name: imports(name) for name in MODULES}
UNITS: dict[str, set[str]] = {}
for _name, _targets in GRAPH.items():
    UNITS.setdefault(unit(_name), set()).update(unit(t) for t in _targets if unit(t) != unit(_name))


def test_every_lib_module_is_in_a_layer():
    for name in MODULES:
        layer_of(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_a_higher_layer(name):
    upward = sorted(m for m in GRAPH[name] if layer_of(m) > layer_of(name))
    assert not upward, (f"{name} (layer {LAYERS[layer_of(name)][0]!r}) imports {upward} from a higher layer: "
                        f"move the shared code down, or the caller up")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), or of one that imports itself."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v), on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_among_modules():
    assert cycles(GRAPH) == []


def test_no_import_cycles_among_layer_entries():
    """``lib.transfer`` -> ``lib.experiments`` -> ``lib.transfer`` is a cycle even when no single pair of
    modules closes it."""
    assert cycles(UNITS) == []


def test_the_checker_sees_function_level_upward_and_circular_imports():
    """The checks can fail: an import inside a function is found, and a two-module cycle is one."""
    source = "import torch\n\ndef f():\n    from lib.experiments import code_state\n    from . import data\n"
    assert imported(source, "lib") == {"torch", "lib.experiments", "lib.data"}
    assert layer_of("lib.experiments") == layer_of("lib.transfer") > layer_of("lib.analysis") > layer_of("lib.models")
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"a"}}) == [["a"]]


def test_import_lib_then_any_submodule_in_a_fresh_interpreter():
    code = "import lib; lib.transfer; lib.records; lib.experiments; lib.analysis; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_layers_as_documented():
    print("\n".join(f"{i}. {name}: {', '.join(p)}" for i, (name, p) in enumerate(LAYERS)))


# ---- the grader's centre: commands registered with their handlers, no test hooks, short functions

def test_every_documented_grader_command_is_registered_and_no_other():
    import re

    from grader import cli

    documented = set(re.findall(r"python -m grader ([a-z-]+)", cli.__doc__))
    assert documented == set(cli.COMMANDS), documented ^ set(cli.COMMANDS)
    usage = cli.parser().format_help()
    assert all(name in usage for name in cli.COMMANDS)


def test_no_test_hook_in_production_code():
    """Faults are injected from the tests (tests/nbgrader_fixtures/worker_fault.py preloads into a Dask worker);
    nothing in lib/ or grader/ exits the process or reads a switch meant for tests."""
    import re

    hooks = re.compile(r"os\._exit\(|FAULT|PYTEST|pytest")
    found = [f"{p.relative_to(ROOT)}:{i}" for pkg in ("lib", "grader") for p in sorted((ROOT / pkg).rglob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1) if hooks.search(line)]
    assert not found, found


def test_the_grader_centre_has_no_function_over_40_lines():
    import ast

    centre = ("autograde.py", "worker.py", "cli.py", "course.py", "config.py", "judge.py", "sandbox.py")
    long = []
    for name in centre:
        for node in ast.walk(ast.parse((ROOT / "grader" / name).read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 40:
                long.append(f"grader/{name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
