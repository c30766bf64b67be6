"""The own-work rules, read from a submitted cell's source without running it, in one pass over its syntax tree.

``GuardCells`` (``grader.preprocessors``) calls :func:`scan_source` on every cell a student could edit and
disables the flagged ones before the notebook runs: "... is not allowed in an answer: write the computation
directly". It reads through IPython's syntax (magics become calls; the bodies of the allowed ``%time``,
``%%time``, ``%timeit`` and ``%%timeit`` are scanned like any other code) and flags the dynamic ways to change
what runs (computed imports, ``exec``/``eval``, import hooks, writes to ``sys.modules``/``sys.path``,
``settrace``, IPython's input transformers and events, replacing attributes of imported modules such as torch,
numpy or builtins, overriding torch's dispatch), and per assignment the tools an answer may not use
(:data:`FORBIDDEN_CALLS`). It is advisory: the judge (``grader.judge``) decides from the hidden cases'
results, computed in the grader's process, whatever the scan missed.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_FORBIDDEN_MODULES = {"builtins", "importlib", "ctypes", "gc", "IPython", "ipykernel", "jupyter_client",
                      "nbgrader", "nbformat", "nbclient", "subprocess", "signal", "shutil", "pty", "runpy",
                      "code", "codeop", "sysconfig", "site", "atexit", "pkgutil", "marshal", "pickle", "zipimport",
                      "grader", "pydoc", "inspect", "dill", "cloudpickle"}
_FORBIDDEN_NAMES = {"get_ipython": "IPython's machinery (`get_ipython`)", "__builtins__": "Python's builtins",
                    "__import__": "a computed import (`__import__`)", "exec": "`exec`", "eval": "`eval`",
                    "compile": "`compile`", "breakpoint": "the debugger", "globals": "`globals()`",
                    "vars": "`vars()`", "locals": "`locals()`"}
_FORBIDDEN_ATTRS = {
    "__code__", "__globals__", "__closure__", "__builtins__", "__defaults__", "__kwdefaults__", "__wrapped__",
    "__subclasses__", "__bases__", "__class__", "__setattr__", "__delattr__", "__getattribute__", "__import__",
    "f_globals", "f_locals", "f_back", "f_builtins", "tb_frame", "gi_frame", "cr_frame",
    "meta_path", "path_hooks", "path_importer_cache", "settrace", "setprofile", "addaudithook", "set_trace",
    "_exit", "kill", "killpg", "abort", "popen", "fork", "forkpty", "execv", "execve", "execl", "execlp",
    "execvp", "spawnv", "spawnl", "posix_spawn", "write_text", "write_bytes", "rmtree", "removedirs",
    "chmod", "symlink_to", "hardlink_to", "input_transformers_cleanup", "input_transformers_post",
    "ast_transformers", "showtraceback", "displayhook", "excepthook", "events", "register_magic_function",
}
# Method names that are only suspicious on an imported module: os.remove, sys.path.append, not my_list.remove.
_FOREIGN_ONLY_ATTRS = {"__dict__", "modules", "remove", "unlink", "rename", "replace", "rmdir", "system"}
_DISPATCH = {"__torch_function__", "__torch_dispatch__", "__instancecheck__", "__subclasscheck__"}
_ALLOWED_MAGICS = {"matplotlib", "time", "timeit"}
_MAGIC_BODIES = {"time", "timeit"}  # their line or body is Python code, scanned like the cell
_CRITICAL_ATTR_NAMES = {"allclose", "isclose", "equal", "max_pool2d", "avg_pool2d", "conv2d", "unfold", "lp_pool2d",
                        "empirical_receptive_field", "count_params", "count_macs", "fashion_mnist_loaders", "fit",
                        "seed_everything", "isinstance", "load_state_dict", "parameters", "state_dict"}
_ALLOWED_MODULE_ATTR_PREFIXES = ("torch.backends.", "plt.rcParams", "matplotlib.rcParams", "pd.options.")
_IPYTHON_SYNTAX = re.compile(r"^\s*[%!]|\?\s*$", re.MULTILINE)

# assignment -> solution cell -> {tool: why the answer may not use it}
_TORCHVISION = {"torchvision": "is the implementation the exercise asks you to write"}
_ATTENTION = {name: "is the attention the exercise asks you to write" for name in (
    "scaled_dot_product_attention", "MultiheadAttention", "multi_head_attention_forward", "TransformerEncoderLayer",
    "TransformerEncoder", "Transformer", "MultiheadSelfAttention", "EncoderBlock", "VisionTransformer",
    "vit_tiny_28", "vit_small_28", "vit_b_16", "vit_b_32", "vit_l_16")} | _TORCHVISION
_NO_AUTOGRAD = dict.fromkeys(("autograd", "backward", "requires_grad_", "vjp", "jacrev", "jacfwd"),
                             "computes the gradient for you (autograd)")
_FROM_SCRATCH = {
    **dict.fromkeys(("conv2d", "Conv2d", "convolution", "conv_transpose2d", "conv2d_input", "conv2d_weight"),
                    "is torch's convolution, which this answer computes"),
    **dict.fromkeys(("unfold", "fold"), "cuts the windows for you"),
    **dict.fromkeys(("max_pool2d", "MaxPool2d", "max_pool2d_with_indices", "max_unpool2d"),
                    "is torch's max pooling, which this answer computes"),
    "scratch": "is the course's implementation (lib.scratch)", **_NO_AUTOGRAD}
_LIB_TRANSFER = dict.fromkeys(("lib.transfer", "transfer"), "is lib's implementation of what the exercise asks you to write")
FORBIDDEN_CALLS: dict[str, dict[str, dict[str, str]]] = {
    "receptive_field": {"calculator": {
        "empirical_receptive_field": "measures the field by back-propagation instead of computing it",
        "linearised_copy": "belongs to the measurement, not to the computation",
    }},
    "resnet_variants": {"preact": _TORCHVISION, "wrn": _TORCHVISION, "resnext": _TORCHVISION},
    "vit_attention": dict.fromkeys(("attention", "self_attention", "patch_embed", "block", "tiny_vit", "experiment"),
                                   _ATTENTION),
    "conv_backward": {"conv_forward": _FROM_SCRATCH, "conv_backward": _FROM_SCRATCH, "pool": _FROM_SCRATCH,
                      "gradcheck": _NO_AUTOGRAD},
    "transfer_finetune": {"feature_extraction": _LIB_TRANSFER, "fine_tuning": _LIB_TRANSFER,
                          "evaluation": {**_LIB_TRANSFER, "evaluate": "is lib.train's evaluation, which the cell asks you to write"}},
}


@dataclass(frozen=True)
class Finding:
    line: int
    what: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.what} is not allowed in an answer: write the computation directly"


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


def _parse(source: str) -> ast.AST | None:
    if _IPYTHON_SYNTAX.search(source):  # magics, shell escapes, help: IPython turns them into calls
        from IPython.core.inputtransformer2 import TransformerManager
        try:
            source = TransformerManager().transform_cell(source)
        except Exception:  # noqa: BLE001 - IPython cannot run it either: nothing to scan
            return None
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None  # it will fail when it runs; nothing to scan


def imported_names(sources: Sequence[str]) -> set[str]:
    """The names that ``import`` statements bind anywhere in ``sources`` (modules, their classes, functions)."""
    names: set[str] = set()
    for source in sources:
        tree = _parse(source)
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, ast.Import):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                names.update(a.asname or a.name for a in node.names)
    return names


class _Scan(ast.NodeVisitor):
    """One visit of a cell's tree; ``findings`` collects what is not allowed, with its line."""

    def __init__(self, foreign: set[str], tools: Mapping[str, str], line_offset: int = 0):
        self.foreign, self.tools, self.offset = foreign, tools, line_offset
        self.findings: list[Finding] = []

    def flag(self, node: ast.AST, what: str) -> None:
        self.findings.append(Finding(getattr(node, "lineno", 1) + self.offset, what))

    def visit_Import(self, node: ast.Import) -> None:
        self._imports(node, [a.name for a in node.names])
        self.foreign.update((a.asname or a.name).split(".")[0] for a in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self._imports(node, [node.module or ""])
        self.foreign.update(a.asname or a.name for a in node.names)
        for a in node.names:
            if a.name in self.tools:
                self.flag(node, f"`{a.name}` (it {self.tools[a.name]})")

    def _imports(self, node: ast.AST, modules: list[str]) -> None:
        for module in modules:
            tool = next((t for t in (module.split(".")[0], module) if t in self.tools), None)  # torchvision, lib.transfer
            if module.split(".")[0] in _FORBIDDEN_MODULES:
                self.flag(node, f"importing `{module}`")
            elif tool is not None:
                self.flag(node, f"`{module}` (it {self.tools[tool]})")

    def visit_Assign(self, node: ast.Assign) -> None:
        dotted = _dotted(node.value) if isinstance(node.value, (ast.Name, ast.Attribute)) else None
        if dotted and dotted.split(".")[0] in self.foreign:  # t = torch: t is foreign too
            self.foreign.update(t.id for t in node.targets if isinstance(t, ast.Name))
        for target in node.targets:
            self._target(target, "replacing")
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._target(node.target, "changing")
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._target(node.target, "replacing")
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self._target(target, "deleting")
        self.generic_visit(node)

    def _target(self, target: ast.AST, verb: str) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self._target(t, verb)
        elif isinstance(target, ast.Attribute):
            dotted = _dotted(target) or target.attr
            root = dotted.split(".")[0]
            if root in self.foreign and not dotted.startswith(_ALLOWED_MODULE_ATTR_PREFIXES):
                self.flag(target, f"{verb} `{dotted}` (of an imported module)")
            elif target.attr in _CRITICAL_ATTR_NAMES and root != "self":
                self.flag(target, f"{verb} `{dotted}` (the name of a function the tests use)")
        elif isinstance(target, ast.Subscript):
            dotted = _dotted(target.value) or ""
            if dotted.split(".")[-1] in ("modules", "__dict__", "path") or dotted.startswith("sys."):
                self.flag(target, f"{verb} an entry of `{dotted}`")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name in _DISPATCH:
            self.flag(node, f"overriding `{node.name}`")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in _FORBIDDEN_NAMES:
            self.flag(node, _FORBIDDEN_NAMES[node.id])
        elif node.id in self.tools:
            self.flag(node, f"`{node.id}` (it {self.tools[node.id]})")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = _dotted(node) or node.attr
        if node.attr in self.tools:
            self.flag(node, f"`{dotted}` (it {self.tools[node.attr]})")
        elif node.attr in _FORBIDDEN_ATTRS:
            self.flag(node, f"`{dotted}` (it reaches into the interpreter, the kernel or the file system)")
        elif dotted.startswith(("sys.path", "sys.modules")) or (
                node.attr in _FOREIGN_ONLY_ATTRS and "()" not in dotted and dotted.split(".")[0] in self.foreign):
            self.flag(node, f"`{dotted}` (it changes what the interpreter runs)")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = _dotted(node.func) or ""
        if func in ("get_ipython().run_line_magic", "get_ipython().run_cell_magic") and self._magic(node):
            return
        if func in ("setattr", "delattr") and node.args:
            target = _dotted(node.args[0]) or ""
            if target.split(".")[0] in self.foreign:
                self.flag(node, f"`{func}` on `{target}` (of an imported module)")
        elif func == "os.open" or func in ("open", "io.open") or func.endswith(".open"):
            self._open(node, func)
        self.generic_visit(node)

    def _magic(self, node: ast.Call) -> bool:
        """An allowed magic: scan its code and stop; anything else is flagged by the generic visit."""
        name, *rest = [a.value if isinstance(a, ast.Constant) else None for a in node.args]
        if name not in _ALLOWED_MAGICS or any(not isinstance(a, str) for a in rest):
            self.flag(node, f"the magic or shell command `{name}`" if name else "a computed magic")
            return False
        for code in rest if name in _MAGIC_BODIES else ():
            tree = _parse(code)
            if tree is not None:
                inner = _Scan(self.foreign, self.tools, self.offset + node.lineno - (1 if len(rest) < 2 else 0))
                inner.visit(tree)
                self.findings += inner.findings
        return True

    def _open(self, node: ast.Call, func: str) -> None:
        if func == "os.open":
            self.flag(node, "opening a file at the operating system's level (`os.open`)")
            return
        position = 1 if func in ("open", "io.open") else 0
        mode = node.args[position] if len(node.args) > position else next(
            (k.value for k in node.keywords if k.arg == "mode"), None)
        if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set("wax+"):
            self.flag(node, f"opening a file for writing (`{func}`)")
        elif mode is not None and not isinstance(mode, ast.Constant):
            self.flag(node, f"opening a file with a computed mode (`{func}`)")


def scan_source(source: str, foreign: set[str] | frozenset[str] = frozenset(),
                forbidden_calls: Mapping[str, str] | None = None) -> list[Finding]:
    """What in one cell's code is not allowed in an answer; empty when nothing is.

    ``foreign`` are names bound by imports elsewhere in the notebook (see :func:`imported_names`): setting or
    deleting an attribute on them (``torch.allclose = ...``, ``setattr(F, ...)``) patches code that is not the
    student's. ``forbidden_calls`` maps the tools this cell must not use (called, or referred to in any other
    way) to the reason.
    """
    tree = _parse(source)
    if tree is None:
        return []
    scan = _Scan(set(foreign), forbidden_calls or {})
    scan.visit(tree)
    return sorted(set(scan.findings), key=lambda f: f.line)
