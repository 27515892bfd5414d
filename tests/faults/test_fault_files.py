"""Files msa reads back: features files with the wrong schema or damaged bytes, bundles whose parts do not
match, and untrusted files (pickles never executed from a bundle; no shell strings in the source tree)."""
from __future__ import annotations

import ast
import hashlib
import json
import pickle
import random
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from faultkit import judge, load_pickle, run_inproc
from msa.core.errors import DataError

REPO = Path(__file__).resolve().parents[2]


def write_pickle(path: Path, obj: Any) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


def evil_pickle(marker: Path) -> bytes:
    """A pickle that creates ``marker`` when unpickled (what a malicious checkpoint would do)."""
    class Evil:
        def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
            return (open, (str(marker), "w"))
    return pickle.dumps({"state_dict": {"w": Evil()}})


# -------------------------------------------------------------------------------- features files

def mutate(split: str, change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], Any]:
    def apply(raw: dict[str, Any]) -> Any:
        change(raw[split])
        return raw
    return apply


SCHEMA_CASES: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "a_list": (lambda raw: [raw["train"]], "expected a dict of splits, got list"),
    "no_splits": (lambda raw: {"config": raw["config"], "training": raw["train"]}, "no splits found"),
    "no_labels": (mutate("train", lambda d: d.pop("regression_labels")), "missing 'regression_labels'"),
    "audio_4d": (mutate("train", lambda d: d.update(audio=d["audio"][..., None])), "audio must be (N, T, D)"),
    "rows_differ": (mutate("valid", lambda d: d.update(vision=d["vision"][:1])), "vision has 1 rows"),
    "text_strings": (mutate("test", lambda d: d.update(text=np.full(d["text"].shape, "x"))), "text is not numeric"),
    "nan_labels": (mutate("train", lambda d: d["regression_labels"].__setitem__(0, np.nan)), "NaN"),
    "width_differs": (mutate("test", lambda d: d.update(audio=d["audio"][:, :, :2])), "audio width differs"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_CASES))
def test_features_file_with_wrong_schema(case: str, features: Path, tmp_path: Path, capsys: Any) -> None:
    change, words = SCHEMA_CASES[case]
    bad = write_pickle(tmp_path / f"{case}.pkl", change(load_pickle(features)))
    res = run_inproc("train", ["--data", bad, "--dataset", "mosi", "--model", "tfn", "--preset", "tiny",
                               "--out", tmp_path / "run", "--epochs", "1", "--device", "cpu", "--quiet"], capsys)
    judge(res, names=[bad.name], reason=words, prog="msa-train")
    assert not (tmp_path / "run" / "bundle.json").exists()


def test_damaged_features_files_fail_clearly_in_train_and_eval(features: Path, bundle: Path, tmp_path: Path,
                                                              capsys: Any) -> None:
    data = features.read_bytes()
    cases = {
        "truncated.pkl": (data[: len(data) // 3], "not a readable features pickle"),
        "random.pkl": (random.Random(0).randbytes(4000), "not a readable features pickle"),
        "text.pkl": (b"video_id,clip_id\n", "not a readable features pickle"),
        "empty.pkl": (b"", "not a readable features pickle"),
        "features.txt": (data, "unknown features format"),
        "zip.npz": (b"PK\x03\x04" + bytes(100), "not a readable .npz"),
    }
    for name, (payload, words) in cases.items():
        path = tmp_path / name
        path.write_bytes(payload)
        res = run_inproc("eval", ["--bundle", bundle, "--data", path, "--device", "cpu"], capsys)
        judge(res, names=[name], reason=words, prog="msa-eval")
        res = run_inproc("train", ["--data", path, "--dataset", "mosi", "--model", "tfn", "--out", tmp_path / "r",
                                   "--device", "cpu", "--quiet"], capsys)
        judge(res, names=[name], reason=words, prog="msa-train")
    judge(run_inproc("eval", ["--bundle", bundle, "--data", tmp_path / "nope.pkl"], capsys), names=["nope.pkl"],
          reason="not found", prog="msa-eval")


@pytest.mark.parametrize("fmt", ["pkl", "npz"])
def test_mutated_features_files_only_raise_typed_errors(fmt: str, features: Path, tmp_path: Path) -> None:
    """Seeded byte mutations (flips, truncation, deletion) of a real features file: it loads or raises a
    DataError, never anything else (a corrupt length field once gave MemoryError / OverflowError)."""
    from msa.pipeline.train.data import load_features, save_npz

    src = features if fmt == "pkl" else save_npz(load_pickle(features), tmp_path / "f.npz")
    data = src.read_bytes()
    rng = random.Random(7)
    target = tmp_path / f"mut.{fmt}"
    outcomes = {"loaded": 0, "DataError": 0}
    for _ in range(300):
        b = bytearray(data)
        kind = rng.randrange(3)
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == 1:
            del b[rng.randrange(len(b)):]
        else:
            start = rng.randrange(len(b))
            del b[start:start + rng.randint(1, 64)]
        target.write_bytes(bytes(b))
        try:
            load_features(target)
            outcomes["loaded"] += 1
        except DataError:
            outcomes["DataError"] += 1
    assert outcomes["DataError"] > 200, outcomes


# ------------------------------------------------------------------------------------------ bundles

def _rehash(b: Path, weights: str = "weights.safetensors") -> None:
    meta = json.loads((b / "bundle.json").read_text())
    meta["weights"]["file"] = weights
    meta["weights"]["sha256"] = hashlib.sha256((b / weights).read_bytes()).hexdigest()
    (b / "bundle.json").write_text(json.dumps(meta))


def _edit_json(b: Path, change: Callable[[dict[str, Any]], None]) -> None:
    meta = json.loads((b / "bundle.json").read_text())
    change(meta)
    (b / "bundle.json").write_text(json.dumps(meta))


def _tensors(b: Path, change: Callable[[dict[str, Any]], None]) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(b / "weights.safetensors"))
    change(state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(b / "weights.safetensors"))


def _other_weights(b: Path) -> None:
    _tensors(b, lambda s: s.update({k: v + 1 for k, v in s.items()}))


def _missing_tensor(b: Path) -> None:
    _tensors(b, lambda s: s.pop(sorted(s)[0]))
    _rehash(b)


def _extra_tensor(b: Path) -> None:
    import torch

    _tensors(b, lambda s: s.update({"stowaway.weight": torch.zeros(2)}))
    _rehash(b)


def _truncated_weights(b: Path) -> None:
    w = b / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    _rehash(b)


def _config_shape(b: Path) -> None:
    _edit_json(b, lambda m: m["model"]["config"].update(post_fusion_dim=m["model"]["config"]["post_fusion_dim"] + 3))


def _spec_changed(b: Path) -> None:
    _edit_json(b, lambda m: m["features"]["audio"]["spec"]["config"].update(hop=0.2))


BUNDLE_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "weights_from_another_run": (_other_weights, "does not match bundle.json (sha256 differs)"),
    "missing_tensor": (_missing_tensor, "weights do not match the model: missing"),
    "extra_tensor": (_extra_tensor, "unexpected ['stowaway.weight']"),
    "truncated_weights": (_truncated_weights, "unreadable weights.safetensors"),
    "config_changes_a_shape": (_config_shape, "has shape"),
    "unknown_config_key": (lambda b: _edit_json(b, lambda m: m["model"]["config"].update(warp=9)),
                           "tfn: unknown config key 'warp'"),
    "config_value_the_model_rejects": (lambda b: _edit_json(b, lambda m: m["model"]["config"].update(average="median")),
                                       "tfn: average = 'median': expected one of 'padded', 'true'"),
    "unknown_model": (lambda b: _edit_json(b, lambda m: m["model"].update(name="gpt")), "unknown model 'gpt'"),
    "other_format": (lambda b: _edit_json(b, lambda m: m.update(format="mmsa/0")), "not an msa bundle"),
    "json_truncated": (lambda b: (b / "bundle.json").write_text((b / "bundle.json").read_text()[:100]),
                       "not valid JSON"),
    "json_a_list": (lambda b: (b / "bundle.json").write_text("[1, 2]"), "not an msa bundle"),
    "no_weights": (lambda b: (b / "weights.safetensors").unlink(), "missing weights.safetensors"),
    "no_json": (lambda b: (b / "bundle.json").unlink(), "missing bundle.json"),
}


@pytest.mark.parametrize("case", sorted(BUNDLE_CASES))
def test_bundle_parts_that_do_not_match(case: str, copy_bundle: Callable[[str], Path], features: Path,
                                        media: dict[str, Path], capsys: Any) -> None:
    change, words = BUNDLE_CASES[case]
    b = copy_bundle(case)
    change(b)
    judge(run_inproc("eval", ["--bundle", b, "--data", features, "--device", "cpu"], capsys), names=[b],
          reason=words, prog="msa-eval")
    res = run_inproc("predict", [media["good"], "--bundle", b, "--signals", "none", "--asr", "fake_asr",
                                 "--device", "cpu"], capsys)
    judge(res, names=[b], reason=words if case != "json_a_list" else "not an msa bundle", prog="msa-predict")


def test_hand_edited_bundle_json_loads_or_fails_typed(copy_bundle: Callable[[str], Path]) -> None:
    """Seeded edits of bundle.json: any entry replaced by a value of another JSON type. Loading the bundle
    and rebuilding its extractors either works or raises BundleError; never a TypeError/AttributeError."""
    from msa.pipeline.train.bundle import load_bundle
    from msa.core.errors import BundleError
    from msa.pipeline.serve.predict import extractor_from_spec

    b = copy_bundle("edited")
    original = json.loads((b / "bundle.json").read_text())

    def leaves(o: Any, pre: tuple = ()) -> list[tuple]:
        items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) else ()
        return [pre] + [p for k, v in items for p in leaves(v, (*pre, k))]

    paths = [p for p in leaves(original) if p and p[0] != "provenance"]
    rng = random.Random(3)
    outcomes = {"loaded": 0, "BundleError": 0}
    for _ in range(150):
        meta = json.loads(json.dumps(original))
        where = rng.choice(paths)
        node = meta
        for k in where[:-1]:
            node = node[k]
        node[where[-1]] = rng.choice([None, [], {}, "x", -1, 0, 1.5, True, [1, 2], {"a": 1}])
        (b / "bundle.json").write_text(json.dumps(meta))
        try:
            loaded = load_bundle(b)
            for m in ("text", "audio", "vision"):
                extractor_from_spec(loaded.specs[m], m, b)
            outcomes["loaded"] += 1
        except BundleError:
            outcomes["BundleError"] += 1
    assert outcomes["BundleError"] > 30, outcomes


def test_predict_refuses_features_that_no_longer_match_the_bundle(copy_bundle: Callable[[str], Path],
                                                                 media: dict[str, Path], capsys: Any) -> None:
    b = copy_bundle("spec")
    _spec_changed(b)  # the recorded extractor config no longer gives the recorded spec hash
    res = run_inproc("predict", [media["good"], "--bundle", b, "--signals", "none", "--asr", "fake_asr"], capsys)
    judge(res, names=[b], reason=["audio extractor fake_audio now gives spec", "re-extract and retrain"],
          prog="msa-predict")


def test_eval_refuses_features_from_other_extractor_settings(bundle: Path, features: Path, tmp_path: Path,
                                                            capsys: Any) -> None:
    raw = load_pickle(features)
    raw["config"]["specs"]["audio"]["spec_hash"] = "0" * 16  # e.g. extracted with --set audio.hop=0.2
    other = write_pickle(tmp_path / "other.pkl", raw)
    judge(run_inproc("eval", ["--bundle", bundle, "--data", other, "--device", "cpu"], capsys),
          reason="audio features differ from the bundle's", prog="msa-eval")


# --------------------------------------------------------------------------------- untrusted files

def test_a_pickle_in_a_bundle_is_never_executed(copy_bundle: Callable[[str], Path], features: Path,
                                                media: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    """A bundle whose weights are a malicious pickle (as weights.pth, or named by bundle.json with a
    matching sha256): every CLI refuses it and the payload never runs."""
    from msa.pipeline.train.bundle import read_legacy_pth
    from msa.core.errors import BundleError

    marker = tmp_path / "pwned"
    payload = evil_pickle(marker)
    b = copy_bundle("pth_only")
    (b / "weights.safetensors").unlink()
    (b / "weights.pth").write_bytes(payload)
    named = copy_bundle("pth_named")
    (named / "weights.pth").write_bytes(payload)
    _rehash(named, "weights.pth")
    disguised = copy_bundle("disguised")
    (disguised / "weights.safetensors").write_bytes(payload)
    _rehash(disguised)
    for bdir, words in ((b, "missing weights.safetensors"), (named, "unreadable weights.pth"),
                        (disguised, "unreadable weights.safetensors")):
        judge(run_inproc("eval", ["--bundle", bdir, "--data", features, "--device", "cpu"], capsys), names=[bdir],
              reason=words, prog="msa-eval")
        judge(run_inproc("predict", [media["good"], "--bundle", bdir, "--signals", "none", "--asr", "fake_asr"],
                         capsys), names=[bdir], reason=words, prog="msa-predict")
    with pytest.raises(BundleError, match="only tensors are accepted"):
        read_legacy_pth(b / "weights.pth")  # the one legacy path: torch.load(weights_only=True)
    assert not marker.exists()


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _sources(*folders: str) -> list[Path]:
    files = [p for f in folders for p in sorted((REPO / f).rglob("*.py"))]
    assert len(files) > 20, files
    return files


RUN_LIKE = re.compile(r"(^|\.)(run|Popen|call|check_call|check_output)$")


def shell_uses(text: str) -> list[str]:
    """Lines of ``text`` that run a shell: shell=True, os.system/os.popen, or a string command."""
    bad = []
    for call in _calls(ast.parse(text)):
        name = _name(call.func)
        if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
            bad.append(f"{call.lineno} {name}")
        for kw in call.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                bad.append(f"{call.lineno} shell=")
        if name.startswith("subprocess.") and RUN_LIKE.search(name) and call.args and \
                isinstance(call.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
            bad.append(f"{call.lineno} {name} with a string command")
    return bad


def test_no_shell_strings_anywhere() -> None:
    """No shell=True, os.system, os.popen or string commands: subprocesses get argument lists."""
    bad_snippet = ("import os, subprocess\nos.system('ls')\nsubprocess.run(['ls'], shell=True)\n"
                   "subprocess.check_output(f'ffmpeg -i {x}')\nos.popen('ls')\n")
    assert len(shell_uses(bad_snippet)) == 4  # the checker itself works
    found = {str(p.relative_to(REPO)): shell_uses(p.read_text(encoding="utf-8"))
             for p in _sources("core", "pipeline", "extractors", "models", "bench", "tests")}
    assert {k: v for k, v in found.items() if v} == {}


def unpickle_sites(text: str) -> list[str]:
    """Calls that unpickle: pickle/joblib loads, np.load without allow_pickle=False, torch.load without
    weights_only=True."""
    sites = []
    for call in _calls(ast.parse(text)):
        name = _name(call.func)
        if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "joblib.load", "dill.load", "dill.loads") or \
                (name in ("np.load", "numpy.load") and not _keyword_is(call, "allow_pickle", False)) or \
                (name == "torch.load" and not _keyword_is(call, "weights_only", True)):
            sites.append(name)
    return sites


def _keyword_is(call: ast.Call, key: str, value: bool) -> bool:
    return any(k.arg == key and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


def test_pickles_load_only_where_documented() -> None:
    """Unpickling happens in two places: a features .pkl the user names (data.py) and msa's own
    checksummed cache (cache.py). torch.load always has weights_only=True; bundles use safetensors."""
    snippet = ("import pickle, torch, numpy as np\npickle.loads(b)\ntorch.load(p)\ntorch.load(p, weights_only=True)\n"
               "np.load(p)\nnp.load(p, allow_pickle=False)\n")
    assert unpickle_sites(snippet) == ["pickle.loads", "torch.load", "np.load"]  # the checker itself works
    found = sorted(f"{p.relative_to(REPO).as_posix()}:{site}" for p in _sources("core", "pipeline", "extractors", "models")
                   for site in unpickle_sites(p.read_text(encoding="utf-8")))
    assert found == ["pipeline/extract/cache.py:pickle.loads", "pipeline/train/data.py:pickle.load"]
    assert "weights_only=True" in (REPO / "pipeline" / "train" / "bundle.py").read_text()


def test_docs_and_help_warn_that_pickles_run_code(capsys: Any) -> None:
    for tool in ("train", "eval"):
        res = run_inproc(tool, ["--help"], capsys)
        assert res.rc == 0 and "can run code" in res.out and ".npz" in res.out, tool
    doc = (REPO / "docs" / "reliability.md").read_text()
    assert "run code" in doc and "--format npz" in doc and "weights_only=True" in doc
