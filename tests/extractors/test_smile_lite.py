"""LiteSmile (extractors/smile_lite.py) gives opensmile.Smile's values frame for frame, without pandas."""
from __future__ import annotations


import numpy as np
import pytest

from msa.extractors.smile_lite import LiteSmile, lite_smile

opensmile = pytest.importorskip("opensmile")

CASES = [("eGeMAPSv02", "LowLevelDescriptors"), ("eGeMAPSv02", "Functionals"),
         ("ComParE_2016", "LowLevelDescriptors"), ("ComParE_2016", "LowLevelDescriptors_Deltas")]


def _signal(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-ish tone with noise, silence and a few clipped samples (the int16 conversion's edges)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    y = 0.4 * np.sin(2 * np.pi * 180 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(t.size)
    y[len(y) // 3 : len(y) // 2] = 0.0
    y[:5] = [1.0, -1.0, 0.99999, -1.2, 1.3]
    return y.astype(np.float32)


@pytest.mark.parametrize(("feature_set", "level"), CASES)
def test_values_and_names_equal_opensmile(feature_set: str, level: str) -> None:
    lite = lite_smile(feature_set, level)
    assert isinstance(lite, LiteSmile)
    ref = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                          feature_level=getattr(opensmile.FeatureLevel, level))
    assert lite.feature_names == ref.feature_names
    for seconds in (0.05, 2.5):
        y = _signal(seconds)
        expected = ref.process_signal(y, 16000).to_numpy()
        got = lite.process(y, 16000)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def test_egemaps_extractor_uses_it_and_never_imports_pandas(fresh_python) -> None:
    code = (
        "import sys, numpy as np\n"
        "from msa.extractors.audio import EGeMAPS\n"
        "class C:\n"
        "    clip_id = 'c'\n"
        "    def audio(self, sr): return (0.1 * np.sin(np.arange(16000) / 7)).astype(np.float32)\n"
        "ex = EGeMAPS()\n"
        "print(ex.describe()[0], ex.extract(C()).data.shape)\n"
        "print(type(ex._smiles[0]).__name__, sorted(m for m in ('pandas', 'opensmile', 'audinterface') if m in sys.modules))\n"
    )
    out = fresh_python(code)
    assert out.split("\n")[:2] == ["25 (101, 25)", "LiteSmile []"], out


def test_unknown_sets_fall_back_to_the_package() -> None:
    assert lite_smile("IS13", "LowLevelDescriptors") is None
    assert lite_smile("eGeMAPSv02", "nope") is None


def test_extractors_give_the_same_features_through_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where LiteSmile is not available the extractors run opensmile.Smile behind the same interface."""
    import msa.extractors.smile_lite as smile_lite
    from msa.extractors.audio import EGeMAPS

    class C:
        def audio(self, sr: int) -> np.ndarray:
            return _signal(3.0, seed=3)

    lite = EGeMAPS().extract(C())
    monkeypatch.setattr(smile_lite, "lite_smile", lambda feature_set, level: None)
    package = EGeMAPS()
    assert not isinstance(package._smiles[0], LiteSmile)
    np.testing.assert_allclose(package.extract(C()).data, lite.data, rtol=1e-6, atol=1e-6)
