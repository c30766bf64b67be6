"""Forward-pass time of every ``lib`` model beside its torchvision twin, with the acceptance table.

Not a test: timings depend on the machine and on what else runs on it. Both models hold the same
random weights (torchvision's ``state_dict`` loaded into ``lib``'s with ``strict=True``); every
repetition times both on the same input in alternating order, under ``torch.inference_mode`` after a
warm-up, and the ratio is of the medians (target: at most 1.05).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_models.py            # all 24 twins at 224x224
    .venv/bin/python benchmarks/bench_models.py --models resnet50 vit_b_16 --reps 15 --threads 1

Columns: parameters (lib / torchvision's ``num_params``), GMACs counted on lib's model by
``FlopCounterMode`` at torchvision's evaluation crop (beside torchvision's ``_ops``), the largest
absolute logit difference, the median forward times and their ratio lib / torchvision, and the ratio
of the fastest runs (less sensitive to other processes on a shared machine).
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.analysis import count_macs, count_params, torchvision_meta  # noqa: E402
from lib.models import TORCHVISION_TWINS, build  # noqa: E402


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights of a sensible scale everywhere (torchvision's ViT starts with a zero head, which
    would make every logit 0 and the comparison empty)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
            if not t.is_floating_point():
                continue
            last = name.rpartition(".")[2]
            if last == "running_var" or (t.dim() == 1 and "weight" in last):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            elif t.dim() >= 2:
                t.copy_(torch.randn(t.shape, generator=g) * t[0].numel() ** -0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
        for m in model.modules():  # variances from 1e-3 to 1, so that BatchNorm's eps matters
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                m.running_var.copy_(10 ** (-3 * torch.rand(m.running_var.shape, generator=g)))
                if m.weight is not None:
                    m.weight.copy_(m.running_var.sqrt() * (torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75))
    return model


def pair(name: str, size: int, device: str) -> tuple[nn.Module, nn.Module]:
    kwargs = {"image_size": size} if name.startswith("vit") else {}
    with torch.device("meta"):
        tv = torchvision.models.get_model(TORCHVISION_TWINS[name], **kwargs)
        lib = build(name, **kwargs)
    tv = randomize_(tv.to_empty(device="cpu"))
    lib.load_state_dict({k: v.clone() for k, v in tv.state_dict().items()}, strict=True, assign=True)
    return lib.to(device).eval(), tv.to(device).eval()


def timed(model: nn.Module, x: torch.Tensor) -> float:
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    model(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=list(TORCHVISION_TWINS))
    parser.add_argument("--size", type=int, default=224, help="image size for the timings")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per model (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, device {args.device}, "
          f"{torch.get_num_threads()} threads, input ({args.batch}, 3, {args.size}, {args.size}), "
          f"{args.reps} interleaved repetitions after {args.warmup} warm-up")
    header = (f"{'model':<16}{'params lib':>13}{'params tv':>13}{'GMACs lib':>11}{'_ops tv':>9}{'crop':>6}"
              f"{'max|dlogit|':>13}{'lib ms':>10}{'tv ms':>10}{'ratio':>7}{'min ratio':>10}")
    print(header)
    print("-" * len(header))
    ratios, min_ratios = [], []
    for name in args.models:
        meta = torchvision_meta(TORCHVISION_TWINS[name])
        crop = meta["crop_size"]
        with torch.device("meta"):
            macs = count_macs(build(name, **({"image_size": crop} if name.startswith("vit") else {})),
                              (1, 3, crop, crop))
        lib, tv = pair(name, args.size, args.device)
        x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        x = x.to(args.device)
        times: dict[str, list[float]] = {"lib": [], "tv": []}
        with torch.inference_mode():
            diff = (lib(x) - tv(x)).abs().max().item()
            for _ in range(args.warmup):
                timed(lib, x), timed(tv, x)
            for r in range(args.reps):
                for key, model in ([("lib", lib), ("tv", tv)] if r % 2 == 0 else [("tv", tv), ("lib", lib)]):
                    times[key].append(timed(model, x))
        t_lib, t_tv = statistics.median(times["lib"]), statistics.median(times["tv"])
        ratios.append(t_lib / t_tv)
        min_ratios.append(min(times["lib"]) / min(times["tv"]))
        print(f"{name:<16}{count_params(lib):>13,}{meta['params']:>13,}{macs / 1e9:>11.3f}{meta['ops']:>9.3f}"
              f"{crop:>6}{diff:>13.2e}{1e3 * t_lib:>10.1f}{1e3 * t_tv:>10.1f}{t_lib / t_tv:>7.3f}{min_ratios[-1]:>10.3f}",
              flush=True)
        del lib, tv
    print("-" * len(header))
    print(f"ratio lib/torchvision: geometric mean {statistics.geometric_mean(ratios):.3f}, "
          f"max {max(ratios):.3f}; {sum(r > 1.05 for r in ratios)} of {len(ratios)} above 1.05 "
          f"(fastest runs: geometric mean {statistics.geometric_mean(min_ratios):.3f}, max {max(min_ratios):.3f})")


if __name__ == "__main__":
    main()
