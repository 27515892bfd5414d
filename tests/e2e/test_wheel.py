"""The built wheel is a complete, ordinary install: the shipped bundle and the demo's inputs are
package data found through the package, so ``msa-predict`` works from a non-editable install run in
an unrelated working directory, with no source tree in sight."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # build from a clean copy: setuptools reuses an existing build/ folder, whose stale files would hide
    # a missing package-data rule (and would pollute the checkout)
    src = tmp_path_factory.mktemp("src") / "msa"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                             "__pycache__", ".pytest_cache", "out", "runs", "feats"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                        str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob("msa-*.whl")
    return whl


def test_wheel_holds_the_code_bundle_and_demo_inputs_and_nothing_else(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("msa/core/errors.py", "msa/core/io.py", "msa/pipeline/extract/runner.py",
                     "msa/pipeline/train/trainer.py", "msa/pipeline/serve/predict.py", "msa/pipeline/cli/predict.py",
                     "msa/extractors/asr.py", "msa/models/tfn.py", "msa/models/layers/bert.py",
                     "msa/checkpoints/__init__.py", "msa/checkpoints/default/bundle.json",
                     "msa/checkpoints/default/weights.safetensors", "msa/pipeline/serve/assets/example_speech.wav",
                     "msa/pipeline/serve/static/index.html", "msa/pipeline/serve/static/app.js"):
        assert required in names, required
    assert not [n for n in names if n.startswith(("tests/", "bench/", "docs/", "msa/tests/"))]
    shipped = REPO / "checkpoints" / "default" / "weights.safetensors"
    with zipfile.ZipFile(wheel) as z:
        assert z.getinfo("msa/checkpoints/default/weights.safetensors").file_size == shipped.stat().st_size


@pytest.mark.slow
def test_non_editable_install_predicts_from_an_unrelated_directory(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # Dependencies come from this interpreter's site-packages, listed as a plain path: the .pth files
    # there (including msa's own editable finder) are not processed, so `msa` resolves to the wheel only.
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                        "--no-deps", str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    py = str(venv / "bin" / "python")
    r = subprocess.run([py, "-c", "import msa.pipeline.serve.predict as p, msa.checkpoints as c; "
                        "print(p.__file__); print(c.shipped_bundle('default'))"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    module, bundle = r.stdout.split()
    assert module.startswith(str(venv)) and bundle.startswith(str(venv)), r.stdout
    r = subprocess.run([py, "-c", "from msa.pipeline.serve.demo import make_example_clip; make_example_clip('clip.mp4')"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([str(venv / "bin" / "msa-predict"), "clip.mp4", "--json", "--signals", "none"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["label"] == "positive" and out["score"] > 1.0 and "love" in out["transcript"].lower()
