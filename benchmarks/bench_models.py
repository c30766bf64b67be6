"""Forward-pass time of every ``lib`` model beside its torchvision twin, with the acceptance table.

Not a test: timings depend on the machine and on what else runs on it. Both models hold the same
random weights (torchvision's ``state_dict`` loaded into ``lib``'s with ``strict=True``); every
repetition times both on the same input in alternating order, under ``torch.inference_mode`` after a
warm-up, and the ratio is of the medians (target: at most 1.05). Small models get more repetitions
(``--seconds``), so that a busy machine's noise averages out.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_models.py            # every twin at 224x224
    .venv/bin/python benchmarks/bench_models.py --models resnet50 vit_b_16 --reps 15 --threads 1
    .venv/bin/python benchmarks/bench_models.py --families densenet convnext --threads 1   # by file

``--families`` takes the family modules' names (``lib/models/<family>.py``: alexnet, vgg, googlenet,
resnet, densenet, mobilenet, efficientnet, convnext, vit), ``--models`` single names; both may be given.

Columns: parameters (lib / torchvision's ``num_params``), GMACs counted on lib's model by
``FlopCounterMode`` at torchvision's evaluation crop (beside torchvision's ``_ops``), the largest
absolute logit difference, the median forward times and their ratio lib / torchvision, and the ratio
of the fastest runs (less sensitive to other processes on a shared machine).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # lib, and the tests' model helpers

from lib.analysis import count_macs, count_params, torchvision_meta  # noqa: E402
from lib.models import MODELS, TORCHVISION_TWINS, build  # noqa: E402
from model_helpers import WEIGHTS_KWARGS, twins  # noqa: E402


def timed(model: nn.Module, x: torch.Tensor) -> float:
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    model(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def select(models: list[str], families: list[str]) -> list[str]:
    """The twins named in ``models`` and those registered by the family modules ``families``, in registry
    order; every twin if both are empty."""
    unknown = [m for m in models if m not in TORCHVISION_TWINS]
    if unknown:
        raise SystemExit(f"not torchvision twins: {unknown}; the twins are {', '.join(TORCHVISION_TWINS)}")
    module_of = {name: MODELS[name].__module__.rpartition(".")[2] for name in TORCHVISION_TWINS}
    missing = sorted(set(families) - set(module_of.values()))
    if missing:
        raise SystemExit(f"no family {missing}; the families are {', '.join(dict.fromkeys(module_of.values()))}")
    if not models and not families:
        return list(TORCHVISION_TWINS)
    return [n for n in TORCHVISION_TWINS if n in models or module_of[n] in families]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=[], help="twins by name (default: all, unless --families)")
    parser.add_argument("--families", nargs="*", default=[], help="every twin of these lib/models files")
    parser.add_argument("--size", type=int, default=224, help="image size for the timings")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per model (after warm-up), at least")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="...or as many as fit in this many seconds per model pair (small models: less noise)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    names = select(args.models, args.families)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, device {args.device}, "
          f"{torch.get_num_threads()} threads, input ({args.batch}, 3, {args.size}, {args.size}), "
          f"at least {args.reps} interleaved repetitions (or {args.seconds:g} s) after {args.warmup} warm-up")
    header = (f"{'model':<20}{'params lib':>13}{'params tv':>13}{'GMACs lib':>11}{'_ops tv':>9}{'crop':>6}"
              f"{'max|dlogit|':>13}{'reps':>6}{'lib ms':>10}{'tv ms':>10}{'ratio':>7}{'min ratio':>10}")
    print(header)
    print("-" * len(header))
    ratios, min_ratios = [], []
    for name in names:
        meta = torchvision_meta(TORCHVISION_TWINS[name])
        crop = meta["crop_size"]
        kwargs = WEIGHTS_KWARGS.get(name, {})  # the model of torchvision's weights and num_params
        with torch.device("meta"):
            macs = count_macs(build(name, **kwargs, **({"image_size": crop} if name.startswith("vit") else {})),
                              (1, 3, crop, crop))
        lib, tv = twins(name, share=False, **kwargs, **({"image_size": args.size} if name.startswith("vit") else {}))
        lib, tv = lib.to(args.device), tv.to(args.device)
        x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        x = x.to(args.device)
        times: dict[str, list[float]] = {"lib": [], "tv": []}
        with torch.inference_mode():
            diff = (lib(x) - tv(x)).abs().max().item()
            warm = [timed(lib, x) + timed(tv, x) for _ in range(max(1, args.warmup))]
            for r in range(max(args.reps, int(args.seconds / min(warm)))):
                for key, model in ([("lib", lib), ("tv", tv)] if r % 2 == 0 else [("tv", tv), ("lib", lib)]):
                    times[key].append(timed(model, x))
        t_lib, t_tv = statistics.median(times["lib"]), statistics.median(times["tv"])
        ratios.append(t_lib / t_tv)
        min_ratios.append(min(times["lib"]) / min(times["tv"]))
        print(f"{name:<20}{count_params(lib):>13,}{meta['params']:>13,}{macs / 1e9:>11.3f}{meta['ops']:>9.3f}"
              f"{crop:>6}{diff:>13.2e}{len(times['lib']):>6}{1e3 * t_lib:>10.1f}{1e3 * t_tv:>10.1f}"
              f"{t_lib / t_tv:>7.3f}{min_ratios[-1]:>10.3f}", flush=True)
        del lib, tv
    print("-" * len(header))
    print(f"ratio lib/torchvision: geometric mean {statistics.geometric_mean(ratios):.3f}, "
          f"max {max(ratios):.3f}; {sum(r > 1.05 for r in ratios)} of {len(ratios)} above 1.05 "
          f"(fastest runs: geometric mean {statistics.geometric_mean(min_ratios):.3f}, max {max(min_ratios):.3f})")


if __name__ == "__main__":
    main()
