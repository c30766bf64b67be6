"""The autograder's tripwire: what in a submitted cell modifies the grading environment, read without running it.

``GuardCells`` (``grader.preprocessors``) calls :func:`scan_source` on every cell a student could edit and
disables the flagged ones before the notebook runs. It is a tripwire, not a sandbox (the sandbox is
``grader.sandbox``): it sees through IPython magics but not through arbitrary obfuscation, so every
dynamic way in (exec, eval, __import__, getattr on modules' dunders, importlib) is itself on the list, and
the run-time checks (``grader.checks.integrity``) back it up. Per assignment, :data:`FORBIDDEN_CALLS` also
names tools a solution cell must not call for its answer.
"""
from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from grader.checks.integrity import critical_functions

# The scan: what in a student's cell modifies the grading environment. It is a tripwire, not a sandbox
# (see book/instructors.md): it reads the code without running it, so it sees through IPython magics but
# not through arbitrary obfuscation; every dynamic way in (exec, eval, __import__, getattr on modules'
# dunders, importlib) is itself on the list.
_FORBIDDEN_MODULES = {"builtins", "importlib", "ctypes", "gc", "IPython", "ipykernel", "jupyter_client",
                      "nbgrader", "nbformat", "nbclient", "subprocess", "signal", "shutil", "pty", "runpy",
                      "code", "codeop", "sysconfig", "site", "atexit", "pkgutil", "marshal", "pickle", "zipimport",
                      "grader"}
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
_CRITICAL_ATTR_NAMES = {name.rsplit(".", 1)[-1] for name in critical_functions()} | {
    "empirical_receptive_field", "count_params", "count_macs", "assert_untampered", "fashion_mnist_loaders",
    "fit", "seed_everything"}

# assignment -> solution cell -> {tool: why the answer may not call it}
FORBIDDEN_CALLS: dict[str, dict[str, dict[str, str]]] = {
    "receptive_field": {"calculator": {
        "empirical_receptive_field": "measures the field by back-propagation instead of computing it",
        "linearised_copy": "belongs to the measurement, not to the computation",
    }},
}
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


def scan_source(source: str, foreign: set[str] | frozenset[str] = frozenset(),
                forbidden_calls: Mapping[str, str] | None = None) -> list[Finding]:
    """What in one cell's code modifies the grading environment; empty when nothing does.

    ``foreign`` are names bound by imports elsewhere in the notebook (see :func:`imported_names`):
    setting or deleting an attribute on them (``torch.allclose = ...``, ``lib.train.fit = ...``,
    ``setattr(F, ...)``) patches code that is not the student's. ``forbidden_calls`` maps the names of tools
    this cell must not use (called, or referred to in any other way) to the reason.
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

    for node in ast.walk(tree):  # a forbidden tool, called or passed around, under any alias
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        if name in (forbidden_calls or {}):
            flag(node, f"uses `{name}`, which this answer may not use: it {forbidden_calls[name]}")
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
