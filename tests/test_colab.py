"""Colab that works: every chapter's first code cell installs the course where `lib` is missing, and does nothing
where it is there.

The Colab case is played here without a network: a fresh virtual environment that has the course's packages
(torch, torchvision, ...) but not `lib`, a home folder of its own, the repository address pointed at a local
clone of this repository, and the data from the local cache. The install cell runs, then the chapter's next
cells (its imports and its first computation).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import colab_cells  # noqa: E402


def test_every_chapter_starts_with_the_install_cell_of_the_configured_repository():
    assert colab_cells.check() == [], "run `make colab-cells` after changing _config.yml's repository.url"
    for path in colab_cells.chapters():
        cells = json.loads(path.read_text())["cells"]
        first_code = next(c for c in cells if c["cell_type"] == "code")
        assert colab_cells.TAG in first_code["metadata"].get("tags", []), f"{path.name}: not the first code cell"


def test_in_the_course_environment_the_cell_does_nothing_and_prints_nothing():
    source = colab_cells.cell_source("https://example.invalid/never-cloned.git")
    result = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""


def _code_cells(chapter: Path, n: int) -> list[str]:
    cells = [c for c in json.loads(chapter.read_text())["cells"] if c["cell_type"] == "code"]
    return ["".join(c["source"]) for c in cells[:n]]


@pytest.mark.slow
def test_the_cell_installs_the_course_where_lib_is_missing(tmp_path):
    timings = {}
    start = time.perf_counter()
    clone = tmp_path / "origin"
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", f"file://{ROOT}", str(clone)], check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the environment's own packages, as Colab has them, but not the course: a plain path, whose .pth files
    # (the course's editable install among them) are not read
    (site / "course_env_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = subprocess.run([str(python), "-c", "import torch, torchvision; import lib"], capture_output=True, text=True,
                           cwd=tmp_path)
    assert "No module named 'lib'" in probe.stderr, probe.stderr[-500:]
    timings["fresh environment"] = time.perf_counter() - start

    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "MPLBACKEND": "Agg",
           "CNN_COURSE_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "FASHION_MNIST_DIR": os.environ.get("FASHION_MNIST_DIR") or str(_data_dir())}
    chapter = ROOT / "book" / "resnet.ipynb"
    install, *rest = _code_cells(chapter, 3)
    install = install.replace(colab_cells.repository_url(), f"file://{clone}")
    script = tmp_path / "first_cells.py"
    script.write_text("import time\n_t = time.perf_counter()\n" + install
                      + "\nprint(f'INSTALLED in {time.perf_counter() - _t:.1f} s')\n" + "\n".join(rest)
                      + "\nprint('FIRST CELLS RAN')\n")
    t = time.perf_counter()
    result = subprocess.run([str(python), str(script)], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=1200)
    timings["install cell and the first cells"] = time.perf_counter() - t
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "INSTALLED" in result.stdout and "FIRST CELLS RAN" in result.stdout
    assert (home / "cnn-course" / "results" / "degradation.json").is_file(), "the chapter's results came too"
    again = subprocess.run([str(python), "-c", "import lib, lib.experiments as e; print(lib.__file__, e.RESULTS_DIR)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert str(home / "cnn-course") in again.stdout, again.stdout + again.stderr
    print("Colab test:", ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


def _data_dir() -> Path:
    from lib.data import DEBIAN_DIR, cache_dir

    raw = cache_dir() / "FashionMNIST" / "raw"
    return raw if raw.is_dir() else DEBIAN_DIR
