#!/usr/bin/env python
"""The README's table of experiments, from the committed records (what each ran, its files, its wall time).

    python scripts/experiments_table.py            # print the table
    python scripts/experiments_table.py --readme   # replace the table in README.md
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib import experiments  # noqa: E402

CHAPTERS = {"degradation": "ResNet", "vgg_fashion": "VGG", "pretrain_backbone": "Transfer learning",
            "transfer_methods": "Transfer learning", "vit_vs_cnn": "Vision Transformers",
            "se_ablation": "EfficientNet", "pooling_shift": "Pooling", "convnext_roadmap": "What each idea bought",
            "linear_bottleneck": "What each idea bought"}
START, END = "<!-- experiments -->", "<!-- /experiments -->"


def table() -> str:
    rows = ["| command | what it runs | result files | chapter | wall time (record) |", "|---|---|---|---|---|"]
    for name in experiments.names():
        if not getattr(experiments.module(name), "COMMITTED", True):
            continue
        path = experiments.RESULTS_DIR / f"{name}.json"
        record = json.loads(path.read_text()) if path.is_file() else None
        files = [f"`results/{name}.json`"] + [f"`{f}`" for f in (record or {}).get("artifacts", {})]
        if record:
            p = record["provenance"]
            load = p["hardware"].get("load_average_at_start")
            when = f"{p['wall_seconds'] / 60:.1f} min" + (f" (load {load:.1f} at the start)" if load is not None else "")
            total = experiments.training_seconds(record)
            if total > 1.05 * p["wall_seconds"]:
                when += f"; {total / 3600:.1f} h of training summed over its parts (workers, resumed runs)"
        else:
            when = "not run yet"
        doc = (experiments.module(name).__doc__ or "").strip().splitlines()[0]
        rows.append(f"| `python -m lib.experiments {name}` | {doc} | {', '.join(files)} | "
                    f"{CHAPTERS.get(name, '')} | {when} |")
    return START + "\n" + "\n".join(rows) + "\n" + END


if __name__ == "__main__":
    text = table()
    if "--readme" in sys.argv[1:]:
        readme = ROOT / "README.md"
        s = readme.read_text()
        if START in s:
            s = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda m: text, s, flags=re.S)
        else:
            s = s.replace("EXPERIMENTS_TABLE", text)
        readme.write_text(s)
        print("README.md: experiments table written")
    else:
        print(text)
