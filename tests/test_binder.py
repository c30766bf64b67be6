"""Binder's launch button builds an image from binder/: the same pins as a local setup, `lib` installed, data
fetched, and JupyterLab started with the course's settings (binder/start). Checked offline: the files resolve to the
project's own, and every command postBuild runs exists."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

BINDER = ROOT / "binder"


def test_binder_requirements_are_the_projects_pins():
    lines = [l.split("#")[0].strip() for l in (BINDER / "requirements.txt").read_text().splitlines()]
    includes = {l.split()[0]: (BINDER / l.split()[1]).resolve() for l in lines if l.startswith(("-r", "-c"))}
    assert includes == {"-r": ROOT / "requirements.txt", "-c": ROOT / "constraints.txt"}, includes
    assert not [l for l in lines if l and not l.startswith(("-r", "-c"))], "pin packages in requirements.txt only"
    py = (BINDER / "runtime.txt").read_text().strip()
    assert py == f"python-{sys.version_info.major}.{sys.version_info.minor}", f"{py}: not the Python we test"


def test_binder_postbuild_installs_lib_and_fetches_the_data():
    post = BINDER / "postBuild"
    assert os.access(post, os.X_OK), "binder/postBuild must be executable (chmod +x)"
    commands = [shlex.split(l) for l in post.read_text().splitlines() if l.strip() and not l.startswith(("#", "set "))]
    assert ["python", "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", "."] in commands
    data = [c for c in commands if c[:3] == ["python", "-m", "lib.data"]]
    assert data, "postBuild must fetch the data (python -m lib.data prepare --download)"
    # the data command's arguments are ones lib.data accepts (--help parses them without running anything)
    out = subprocess.run([sys.executable, "-m", "lib.data", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for arg in data[0][3:]:
        assert arg in out.stdout, f"postBuild passes {arg!r}, which `python -m lib.data` does not know"


def test_binder_starts_jupyterlab_with_the_courses_settings(tmp_path):
    """binder/start (run by Binder around the server's command) puts jupyter/ first among Jupyter's config
    folders, as `make lab` does, and hands over to the command."""
    start = BINDER / "start"
    assert os.access(start, os.X_OK), "binder/start must be executable (chmod +x)"
    assert start.read_text().rstrip().endswith('exec "$@"'), "binder/start must end by running Binder's command"
    jupyter = str(Path(sys.executable).parent / "jupyter")
    env = dict(os.environ, JUPYTER_CONFIG_PATH="/elsewhere")
    out = subprocess.run([str(start), jupyter, "--paths", "--json"], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)["config"]
    assert config[:2] == [str(ROOT / "jupyter"), "/elsewhere"], config
    assert (ROOT / "jupyter" / "jupyter_server_config.py").is_file()
