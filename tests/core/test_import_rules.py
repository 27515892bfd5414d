"""The layering of docs/architecture.md, enforced: imports point down only.

core <- extractors, models <- pipeline. ``msa.core`` imports nothing else of msa; ``msa.extractors``
and ``msa.models`` never import ``msa.pipeline`` (nor the shipped checkpoints).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ALLOWED = {
    "core": ("msa.core",),
    "extractors": ("msa.core", "msa.extractors", "msa.models"),
    "models": ("msa.core", "msa.models", "msa.extractors"),
}


def msa_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute ``msa.*`` import in a file, at any depth (lazy ones too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n == "msa" or n.startswith("msa.")]
    return found


def lazy_targets(path: Path) -> list[str]:
    """``"msa.x.y:attr"`` registry strings: a lazy import is still an import."""
    return [n.value.split(":")[0] for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("msa.") and ":" in n.value]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_point_down(layer: str) -> None:
    bad = []
    for f in sorted((REPO / layer).rglob("*.py")):
        mods = msa_imports(f) + [(0, m) for m in lazy_targets(f)]
        bad += [f"{f.relative_to(REPO)}:{line} imports {m}" for line, m in mods
                if not any(m == a or m.startswith(a + ".") for a in ALLOWED[layer])]
    assert not bad, "\n".join(bad)


# pipeline's jobs: extract and train are peers (extract writes the features file through train.data's
# format only); serve builds on both; cli is the top (only the demo, which runs msa-predict, calls it).
PIPELINE_ALLOWED = {
    "extract": ("msa.pipeline.extract", "msa.pipeline.train.data"),
    "train": ("msa.pipeline.train",),
    "serve": ("msa.pipeline.extract", "msa.pipeline.train", "msa.pipeline.serve"),
}
PIPELINE_EXCEPTIONS = {"pipeline/serve/demo.py": ("msa.pipeline.cli",)}


@pytest.mark.parametrize("job", sorted(PIPELINE_ALLOWED))
def test_pipeline_jobs_import_in_one_direction(job: str) -> None:
    bad = []
    for f in sorted((REPO / "pipeline" / job).rglob("*.py")):
        rel = f.relative_to(REPO).as_posix()
        allowed = PIPELINE_ALLOWED[job] + PIPELINE_EXCEPTIONS.get(rel, ())
        bad += [f"{rel}:{line} imports {m}" for line, m in msa_imports(f)
                if m.startswith("msa.pipeline") and not any(m == a or m.startswith(a + ".") for a in allowed)]
    assert not bad, "\n".join(bad)


def test_relative_imports_stay_inside_their_package() -> None:
    """``from ..x import`` may not climb out of a top-level package (it would hide a layer crossing)."""
    bad = []
    for layer in ("core", "extractors", "models", "pipeline"):
        for f in sorted((REPO / layer).rglob("*.py")):
            depth = len(f.relative_to(REPO / layer).parts) - 1
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level > depth + 1:
                    bad.append(f"{f.relative_to(REPO)}:{node.lineno}")
    assert not bad, bad


def test_the_checker_sees_a_crossing(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("def g():\n    from msa.pipeline.train.data import load_features\nR = 'msa.pipeline.x:Y'\n")
    assert msa_imports(f) == [(2, "msa.pipeline.train.data")]
    assert lazy_targets(f) == ["msa.pipeline.x"]
