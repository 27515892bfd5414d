"""msa-doctor: the offline preflight table, its JSON, and its exit code."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from msa.extractors import EXTRACTORS, RECIPES
from msa.pipeline.cli import doctor
from msa.pipeline.extract.media import ffmpeg_exe

OFFLINE_WEIGHTS = ("whisper", "minilm", "fer_emotion", "facemesh_au", "egemaps")


@pytest.fixture
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip the (slow) torch import where CUDA is not what the test is about."""
    monkeypatch.setattr(doctor, "_cuda", lambda: {"torch": "x", "available": False, "devices": []})


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    rc = doctor.main(["--json", *args])
    return rc, json.loads(capsys.readouterr().out)


def test_table_in_process_exits_0_with_default_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    rc = doctor.main([])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"ffmpeg: {ffmpeg_exe()} (ffmpeg version" in out and "; frames: PyAV " in out
    assert "cuda: " in out
    lines = out.splitlines()
    for name in EXTRACTORS.names():
        assert any(line.split()[:1] == [name] for line in lines), name
    assert "recipe 'default' is usable on this machine." in out


def test_json_has_an_entry_per_extractor(capsys: pytest.CaptureFixture[str], no_torch: None) -> None:
    rc, rep = run_json(capsys)
    assert rc == 0 and rep["usable"] is True and rep["recipe"] == "default"
    rows = {r["name"]: r for r in rep["extractors"]}
    assert sorted(rows) == EXTRACTORS.names()
    for name, row in rows.items():
        assert row["module"] == EXTRACTORS.entry_path(name).partition(":")[0]
        assert row["usable"] == (row["module_found"] and all(row["packages"].values()) and row["weights_ok"])
    assert all(rows[n]["usable"] for n in RECIPES["default"].values())
    assert set(rep["recipes"]) == set(RECIPES)
    assert rep["ffmpeg"]["path"] == ffmpeg_exe() and rep["ffmpeg"]["version"].startswith("ffmpeg version")
    assert rep["ffmpeg"]["frames"].startswith("PyAV ") and "libavcodec" in rep["ffmpeg"]["frames"]
    assert {b["name"] for b in rep["backends"]} >= {"text-encoder minilm", "text-encoder hf", "clip weights",
                                                   "py-feat weights", "whisper model"}


def test_package_shipped_weights_are_found(capsys: pytest.CaptureFixture[str], no_torch: None) -> None:
    _, rep = run_json(capsys)
    rows = {r["name"]: r for r in rep["extractors"]}
    for name in OFFLINE_WEIGHTS:
        assert rows[name]["weights_ok"], rows[name]
        assert Path(rows[name]["weights"]).is_dir()


def test_clip_weights_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clip = EXTRACTORS.get("clip_vitb16")
    monkeypatch.delenv("MSA_CLIP_WEIGHTS", raising=False)
    ok, detail = clip.weights_status()
    assert not ok and "MSA_CLIP_WEIGHTS" in detail
    weights = tmp_path / "vitb16.safetensors"
    weights.write_bytes(b"\0" * 8)
    monkeypatch.setenv("MSA_CLIP_WEIGHTS", str(weights))
    assert clip.weights_status() == (True, str(weights))


def test_pyfeat_weights_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """doctor asks the pyfeat extractor, so it names exactly the files the extractor would load."""
    from msa.extractors.pyfeat import REQUIRED

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr("msa.extractors.pyfeat.default_roots", lambda: [])
    monkeypatch.setenv("MSA_PYFEAT_WEIGHTS", str(tmp_path))
    for _repo, names in REQUIRED[:-1]:
        (tmp_path / names[0]).write_bytes(b"x")
    pyfeat = EXTRACTORS.get("pyfeat_au")
    ok, detail = pyfeat.weights_status()
    last_repo, last_names = REQUIRED[-1]
    assert not ok and f"{last_repo}/{last_names[0]}" in detail and "MSA_PYFEAT_WEIGHTS" in detail
    (tmp_path / last_names[0]).write_bytes(b"x")
    ok, detail = pyfeat.weights_status()
    assert ok, detail


def test_missing_package_makes_default_unusable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_torch: None
) -> None:
    text = EXTRACTORS.get(RECIPES["default"]["text"])
    monkeypatch.setattr(text, "packages", (*text.packages, "no_such_package_for_msa"))
    assert doctor.main([]) == 1
    out = capsys.readouterr().out
    assert "no_such_package_for_msa" in out and "recipe 'default' is NOT usable" in out
    rc, rep = run_json(capsys)
    assert rc == 1 and f"text:{RECIPES['default']['text']}" in rep["recipes"]["default"]["blocked_by"]


def test_a_broken_extractor_module_is_reported_not_fatal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_torch: None
) -> None:
    monkeypatch.setitem(EXTRACTORS._entries, "compare", "msa.extractors.no_such_module_for_msa:Nope")
    rc, rep = run_json(capsys)
    row = next(r for r in rep["extractors"] if r["name"] == "compare")
    assert row["usable"] is False and row["module_found"] is False and "cannot check" in row["weights"]
    assert rc == 0  # compare is not in the default recipe


def test_an_extractor_whose_weights_check_raises_is_reported_not_fatal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_torch: None
) -> None:
    def broken() -> tuple[bool, str]:
        raise NameError("oops")

    monkeypatch.setattr(EXTRACTORS.get("compare"), "weights_status", broken)
    rc, rep = run_json(capsys)
    row = next(r for r in rep["extractors"] if r["name"] == "compare")
    assert row["usable"] is False and "NameError: oops" in row["weights"] and rc == 0


def test_every_extractor_describes_itself() -> None:
    """The doctor and the plot read these, so a new extractor is one module plus one registry line."""
    for name in EXTRACTORS.names():
        cls = EXTRACTORS.get(name)
        assert all(isinstance(p, str) and p for p in cls.packages), name
        ok, detail = cls.weights_status()
        assert isinstance(ok, bool) and detail, name
        assert set(cls.plot_signals) <= {"pitch", "loudness", "face", "expression"}, name


def test_recipe_option_sets_exit_code(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_torch: None
) -> None:
    monkeypatch.delenv("MSA_CLIP_WEIGHTS", raising=False)
    rc, rep = run_json(capsys, "--recipe", "clip")
    assert rc == 1 and rep["usable"] is False and "visual:clip_vitb16" in rep["recipes"]["clip"]["blocked_by"]
    assert doctor.main(["--recipe", "nope"]) == 2
    assert "unknown recipe 'nope'" in capsys.readouterr().err


def test_console_script() -> None:
    script = Path(sys.executable).parent / "msa-doctor"
    if not script.exists():
        pytest.skip("msa-doctor console script not installed in this environment")
    res = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "--json" in res.stdout
    res = subprocess.run([str(script), "--recipe", "nope"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.startswith("msa-doctor: error: unknown recipe")
