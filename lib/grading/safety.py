"""The grader's own safety.

- :func:`assert_untampered` runs at the top of every test cell, after the cell has loaded a fresh copy of
  ``lib.grading`` from disk, and fails when a submission replaced the ``torch`` or builtin functions the
  checks rely on;
- :func:`scan_source` is the autograder's tripwire (``GuardCells`` in ``nbgrader_config.py``): it reads a
  cell's code without running it and finds what modifies the grading environment (imported modules,
  IPython's hooks, ``sys.modules``, the kernel's life, files); the autograder disables such cells before it
  runs the notebook.
"""
from __future__ import annotations

import ast
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lib.grading.base import fail


_C_TYPES = (type(len), type(str.join), type(object.__init__), type(object.__eq__))  # builtins, descriptors


def _trusted(obj: object, roots: Sequence[Path]) -> bool:
    """C functions are trusted; a Python function only when its code lives in torch, lib or the stdlib."""
    if isinstance(obj, _C_TYPES):
        return True
    if isinstance(obj, type):  # float, int: a static C type, not a class defined at run time
        return not obj.__flags__ & (1 << 9)  # Py_TPFLAGS_HEAPTYPE
    code = getattr(obj, "__code__", None)
    if code is None:
        return False
    path = Path(code.co_filename).resolve()
    return any(root in path.parents for root in roots)


def _critical() -> dict[str, object]:
    import builtins
    return {
        "torch.allclose": torch.allclose, "torch.isclose": torch.isclose, "torch.equal": torch.equal,
        "torch.Tensor.__eq__": torch.Tensor.__eq__, "torch.Tensor.__sub__": torch.Tensor.__sub__,
        "torch.Tensor.abs": torch.Tensor.abs, "torch.Tensor.all": torch.Tensor.all, "torch.Tensor.any": torch.Tensor.any,
        "torch.Tensor.max": torch.Tensor.max, "torch.Tensor.item": torch.Tensor.item,
        "torch.Tensor.backward": torch.Tensor.backward, "torch.Tensor.numel": torch.Tensor.numel,
        "F.max_pool2d": F.max_pool2d, "F.avg_pool2d": F.avg_pool2d, "F.conv2d": F.conv2d, "F.unfold": F.unfold,
        "F.lp_pool2d": F.lp_pool2d, "nn.Module.__call__": nn.Module.__call__,
        "nn.Module.parameters": nn.Module.parameters, "nn.Module.load_state_dict": nn.Module.load_state_dict,
        "torch.autograd.grad": torch.autograd.grad, "torch.manual_seed": torch.manual_seed,
        "builtins.isinstance": builtins.isinstance, "builtins.abs": builtins.abs, "builtins.len": builtins.len,
        "builtins.sum": builtins.sum, "builtins.all": builtins.all, "builtins.any": builtins.any,
        "builtins.float": builtins.float, "builtins.int": builtins.int, "builtins.round": builtins.round,
        "math.isclose": math.isclose,
    }


def assert_untampered() -> None:
    """Fail when the grading environment was modified at run time.

    Test cells first drop every ``lib`` module from ``sys.modules`` and import ``lib.grading`` again from
    disk, so patched checks do not survive; this function then makes sure that the fresh copy does not
    come from the submission's own folder and that the ``torch`` and builtin functions it relies on are
    still the real ones.
    """
    here = Path(__file__).resolve()
    cwd = Path.cwd().resolve()
    if os.environ.get("NBGRADER_EXECUTION") == "autograde" and cwd in here.parents:  # a lib/ next to the notebook
        fail(f"lib.grading was loaded from the submission's folder ({here}), not from the course's lib: "
              f"remove the `lib` folder next to your notebook")
    lib_dir = here.parents[1]
    roots = [Path(torch.__file__).resolve().parent, lib_dir, Path(os.__file__).resolve().parent]
    replaced = [name for name, obj in _critical().items() if not _trusted(obj, roots)]
    if replaced:
        fail(f"the grading environment was modified at run time ({', '.join(replaced)} replaced): "
              f"restart the kernel and run your notebook without changing torch or Python's builtins")


# The scan: what in a student's cell modifies the grading environment. It is a tripwire, not a sandbox
# (see book/instructors.md): it reads the code without running it, so it sees through IPython magics but
# not through arbitrary obfuscation; every dynamic way in (exec, eval, __import__, getattr on modules'
# dunders, importlib) is itself on the list.
_FORBIDDEN_MODULES = {"builtins", "importlib", "ctypes", "gc", "IPython", "ipykernel", "jupyter_client",
                      "nbgrader", "nbformat", "nbclient", "subprocess", "signal", "shutil", "pty", "runpy",
                      "code", "codeop", "sysconfig", "site", "atexit"}
_FORBIDDEN_NAMES = {"get_ipython": "uses IPython's machinery", "__builtins__": "touches Python's builtins",
                    "__import__": "imports dynamically", "exec": "executes generated code",
                    "eval": "evaluates generated code", "compile": "compiles generated code",
                    "breakpoint": "stops in the debugger", "globals": "edits the namespace dynamically",
                    "vars": "edits a namespace dynamically"}
_FORBIDDEN_ATTRS = {
    "__code__", "__globals__", "__closure__", "__builtins__", "__defaults__", "__kwdefaults__",
    "__subclasses__", "__bases__", "__setattr__", "__delattr__", "__getattribute__", "__import__",
    "f_globals", "f_locals", "f_back", "f_builtins", "tb_frame", "gi_frame", "cr_frame",
    "meta_path", "path_hooks", "path_importer_cache", "settrace", "setprofile", "addaudithook",
    "_exit", "kill", "killpg", "abort", "popen", "fork", "forkpty", "execv", "execve", "execl", "execlp",
    "execvp", "spawnv", "spawnl", "posix_spawn", "write_text", "write_bytes", "rmtree", "removedirs",
    "chmod", "symlink_to", "hardlink_to", "input_transformers_cleanup", "input_transformers_post",
    "ast_transformers", "showtraceback", "displayhook", "excepthook",
}
# Common method names that are only suspicious on an imported module: os.remove, not my_list.remove.
_FOREIGN_ONLY_ATTRS = {"__dict__", "modules", "remove", "unlink", "rename", "replace", "rmdir", "system"}
_ALLOWED_MAGICS = {"matplotlib", "time", "timeit", "config"}
_CRITICAL_ATTR_NAMES = {name.rsplit(".", 1)[-1] for name in _critical()} | {
    "empirical_receptive_field", "count_params", "count_macs", "assert_untampered", "fashion_mnist_loaders"}
_ALLOWED_MODULE_ATTR_PREFIXES = ("torch.backends.", "plt.rcParams", "matplotlib.rcParams", "pd.options.")


@dataclass(frozen=True)
class Finding:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    if isinstance(node, ast.Call):
        inner = _dotted(node.func)
        return None if inner is None else ".".join([inner + "()", *reversed(parts)])
    return None


def imported_names(sources: Sequence[str]) -> set[str]:
    """The names that ``import`` statements bind anywhere in ``sources`` (modules, their classes, functions)."""
    names = set()
    for source in sources:
        tree = _parse(source)
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, ast.Import):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                names.update(a.asname or a.name for a in node.names)
    return names


def _parse(source: str) -> ast.AST | None:
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        source = TransformerManager().transform_cell(source)
    except Exception:  # pragma: no cover - IPython is always there in the course's environment
        pass
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None  # it will fail when it runs; nothing to scan


def scan_source(source: str, foreign: set[str] | frozenset[str] = frozenset()) -> list[Finding]:
    """What in one cell's code modifies the grading environment; empty when nothing does.

    ``foreign`` are names bound by imports elsewhere in the notebook (see :func:`imported_names`):
    setting or deleting an attribute on them (``torch.allclose = ...``, ``lib.grading.check = ...``,
    ``setattr(F, ...)``) patches code that is not the student's.
    """
    tree = _parse(source)
    if tree is None:
        return []
    foreign = set(foreign) | imported_names([source])
    aliases = set()  # names bound to foreign objects: t = torch
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Name, ast.Attribute)):
            dotted = _dotted(node.value) or "()"
            if "()" not in dotted and dotted.split(".")[0] in foreign:
                aliases.update(t.id for t in node.targets if isinstance(t, ast.Name))
    foreign |= aliases
    findings: list[Finding] = []

    def flag(node: ast.AST, message: str) -> None:
        findings.append(Finding(getattr(node, "lineno", 0), message))

    def check_target(target: ast.AST, verb: str) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                check_target(t, verb)
            return
        if isinstance(target, ast.Attribute):
            dotted = _dotted(target) or ""
            root = dotted.split(".")[0]
            if root in foreign and not dotted.startswith(_ALLOWED_MODULE_ATTR_PREFIXES):
                flag(target, f"{verb} `{dotted}`, which belongs to an imported module")
            elif target.attr in _CRITICAL_ATTR_NAMES and root != "self":
                flag(target, f"{verb} `{dotted}`, the name of a function the grader relies on")
        if isinstance(target, ast.Subscript):
            dotted = _dotted(target.value) or ""
            if dotted.split(".")[-1] in ("modules", "__dict__") or dotted.startswith("sys."):
                flag(target, f"{verb} an entry of `{dotted}`")

    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                if module.split(".")[0] in _FORBIDDEN_MODULES:
                    flag(node, f"imports `{module}`, which can change how the notebook is run or graded")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                check_target(t, "sets")
        elif isinstance(node, ast.Delete):
            for t in node.targets:
                check_target(t, "deletes")
        elif isinstance(node, ast.Name) and node.id in _FORBIDDEN_NAMES:
            if node.id == "get_ipython" and id(node) in called:
                continue  # judged at the call, where the method and the magic's name are known
            flag(node, f"`{node.id}` {_FORBIDDEN_NAMES[node.id]}")
        elif isinstance(node, ast.Attribute) and (node.attr in _FORBIDDEN_ATTRS or node.attr in _FOREIGN_ONLY_ATTRS):
            dotted = _dotted(node) or node.attr
            if node.attr in _FOREIGN_ONLY_ATTRS and ("()" in dotted or dotted.split(".")[0] not in foreign):
                continue  # df.rename(...), pd.DataFrame(...).replace(...): methods of objects, not modules
            flag(node, f"uses `{dotted}`, which reaches into the interpreter, the kernel or the file system")
        elif isinstance(node, ast.Call):
            func = _dotted(node.func) or ""
            if func in ("setattr", "delattr") and node.args:
                target = _dotted(node.args[0]) or ""
                if target.split(".")[0] in foreign:
                    flag(node, f"`{func}` on `{target}`, which belongs to an imported module")
            elif func == "get_ipython":
                if not any(isinstance(o, ast.Attribute) and o.value is node for o in ast.walk(tree)):
                    flag(node, "uses get_ipython(), IPython's machinery")
            elif func.startswith("get_ipython()."):
                method = func.split(".", 1)[1]
                name = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
                if not (method in ("run_line_magic", "run_cell_magic") and name in _ALLOWED_MAGICS):
                    what = f"the magic or shell command `{name}`" if name else f"get_ipython().{method}"
                    flag(node, f"uses {what}; only %matplotlib, %time and %timeit are allowed in graded notebooks")
            elif func == "os.open":
                flag(node, "opens a file at the operating system's level (`os.open`)")
            elif func in ("open", "io.open") or func.endswith(".open"):
                position = 1 if func in ("open", "io.open") else 0
                mode = node.args[position] if len(node.args) > position else next(
                    (k.value for k in node.keywords if k.arg == "mode"), None)
                if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
                    if set(mode.value) & set("wax+"):
                        flag(node, f"opens a file for writing (`{func}`)")
                elif mode is not None:
                    flag(node, f"opens a file with a computed mode (`{func}`)")
    return sorted(set(findings), key=lambda f: f.line)
