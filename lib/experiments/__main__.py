import argparse
import sys
from pathlib import Path

from lib import experiments


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lib.experiments", description=experiments.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="an experiment name, or 'list'")
    p.add_argument("--quick", action="store_true", help="a short smoke run (results go to runs/, not results/)")
    p.add_argument("--out", type=Path, default=None, help="folder for the results (default: results/)")
    p.add_argument("--allow-dirty", action="store_true",
                   help="run from a tree with uncommitted code changes, recording the diff and its sha256")
    args = p.parse_args(argv)
    if args.name == "list":
        for name in experiments.names():
            print(f"{name:24s} {(experiments.module(name).__doc__ or '').strip().splitlines()[0]}")
        return 0
    try:
        path = experiments.run(args.name, quick=args.quick, out_dir=args.out, allow_dirty=args.allow_dirty)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    except experiments.DirtyTreeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
