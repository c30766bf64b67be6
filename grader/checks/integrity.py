"""The hidden tests' own safety, inside the kernel that runs the submission.

- :func:`assert_untampered` runs at the top of every hidden test, after the cell loaded a fresh copy of
  ``grader.checks`` (and of ``lib``) from disk, and fails when a submission replaced the ``torch`` or builtin
  functions the checks rely on;
- :func:`reference` marks a reference implementation: it computes an expected answer for a check, and
  refuses to be called from anywhere but the grader's own code, so a submission that reaches it at grading
  time (through ``pkgutil``, ``pickle`` or any other door the source scan cannot list) fails instead of
  earning the points;
- :func:`assert_own_work` fails a class or a model built from torchvision's implementation of what the
  exercise asks the student to write.
"""
from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from grader.checks.base import fail

GRADER_DIR = Path(__file__).resolve().parents[1]
_C_TYPES = (type(len), type(str.join), type(object.__init__), type(object.__eq__))  # builtins, descriptors


def _trusted(obj: object, roots: Sequence[Path]) -> bool:
    """C functions are trusted; a Python function only when its code lives in torch, lib, grader or the stdlib."""
    if isinstance(obj, _C_TYPES):
        return True
    if isinstance(obj, type):  # float, int: a static C type, not a class defined at run time
        return not obj.__flags__ & (1 << 9)  # Py_TPFLAGS_HEAPTYPE
    code = getattr(obj, "__code__", None)
    if code is None:
        return False
    path = Path(code.co_filename).resolve()
    return any(root in path.parents for root in roots)


def critical_functions() -> dict[str, object]:
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

    Hidden tests first drop every ``lib`` and ``grader`` module from ``sys.modules`` and import
    ``grader.checks`` again from disk, so patched checks do not survive; this function then makes sure that
    the fresh copy does not come from the submission's own folder and that the ``torch`` and builtin
    functions the checks rely on are still the real ones.
    """
    here = Path(__file__).resolve()
    cwd = Path.cwd().resolve()
    if os.environ.get("NBGRADER_EXECUTION") == "autograde" and cwd in here.parents:  # a grader/ next to the notebook
        fail(f"the grader's checks were loaded from the submission's folder ({here}): remove the `grader` "
             f"folder next to your notebook")
    import lib
    lib_dir = Path(lib.__file__).resolve().parent
    roots = [Path(torch.__file__).resolve().parent, lib_dir, GRADER_DIR, Path(os.__file__).resolve().parent]
    replaced = [name for name, obj in critical_functions().items() if not _trusted(obj, roots)]
    if replaced:
        fail(f"the grading environment was modified at run time ({', '.join(replaced)} replaced): "
             f"restart the kernel and run your notebook without changing torch or Python's builtins")


def reference(fn: Callable) -> Callable:
    """Mark ``fn`` as a reference implementation: only the grader's own code may call it while nbgrader runs
    a notebook (``NBGRADER_EXECUTION`` is set); a call from a submission's code fails with a message."""
    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        if os.environ.get("NBGRADER_EXECUTION"):
            caller = Path(sys._getframe(1).f_code.co_filename)
            try:
                inside = GRADER_DIR in caller.resolve().parents
            except (OSError, ValueError):
                inside = False
            if not inside:
                fail(f"your code called the grader's reference `{fn.__name__}` (from {caller.name}): the points "
                     f"are for writing it yourself")
        return fn(*args, **kwargs)
    return guarded


def _foreign(cls: type) -> type | None:
    """The first class in ``cls``'s ancestry that comes from torchvision, if any."""
    for base in getattr(cls, "__mro__", ()):
        if (getattr(base, "__module__", "") or "").split(".")[0] == "torchvision":
            return base
    return None


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def assert_own_work(obj: object, desc: str, *, build_from: str = "lib's blocks") -> None:
    """Fail when ``obj`` (a class, a callable building a module, or a module) is, derives from or contains
    torchvision's implementation: the exercise asks for one built from ``build_from``."""
    target = getattr(obj, "func", obj)  # functools.partial(Block, ...) -> Block
    if isinstance(target, type):
        found = _foreign(target)
        if found is not None:
            verb = "is" if found is target else "derives from"
            fail(f"{desc} {verb} {_name(found)}: build it from {build_from}, not from torchvision's implementation")
        return
    if isinstance(obj, nn.Module):
        for name, module in obj.named_modules():
            found = _foreign(type(module))
            if found is not None:
                where = f"its module `{name}`" if name else "it"
                fail(f"{desc}: {where} is torchvision's {_name(found)}: build it from {build_from}, "
                     f"not from torchvision's implementation")
