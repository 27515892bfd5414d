"""The numpy BERT (models/layers/bert_np.py) gives the torch encoder's states, and MiniLM extraction on it
gives the torch path's features without importing torch."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from msa.extractors.base import Transcript, Word
from msa.models.layers.bert_np import NumpyBert, _erf, load_bert_np, read_safetensors
from msa.models.layers.text import minilm_path
from msa.models.layers.wordpiece import load_tokenizer

TEXTS = [
    "I really LOVED this movie!!",
    "bin blue at f two now",
    "Café naïve résumé, 東京 and an emoji 😀\twith tabs\nand newlines",
    "",
]
TOL = 1e-4  # the acceptance bound; float32 rounding differences measure about 3e-6


@pytest.fixture(scope="module")
def models():
    torch = pytest.importorskip("torch")
    from msa.models.layers.bert import load_bert

    torch.set_num_threads(1)
    return load_bert_np(minilm_path()), load_bert(minilm_path()), load_tokenizer(minilm_path())


def test_states_match_the_torch_encoder(models) -> None:
    import torch

    np_model, torch_model, tok = models
    assert isinstance(np_model, NumpyBert) and np_model.config == torch_model.config
    for text in TEXTS:
        ids = tok(text)["input_ids"]
        with torch.inference_mode():
            ref = torch_model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)).last_hidden_state.numpy()
        ours = np_model(np.array([ids]))
        assert ours.dtype == np.float32 and ours.shape == ref.shape == (1, len(ids), 384)
        np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)


def test_batch_of_windows_matches_one_by_one(models) -> None:
    np_model, _, _ = models
    rng = np.random.default_rng(1)
    batch = rng.integers(1000, 30000, size=(3, 40))
    together = np_model(batch)
    for i in range(3):
        np.testing.assert_allclose(together[i], np_model(batch[i : i + 1])[0], atol=1e-5, rtol=0)


def test_erf_is_accurate() -> None:
    x = np.linspace(-6, 6, 2001)
    assert np.abs(_erf(x) - np.array([math.erf(v) for v in x])).max() < 2e-7


def _features(use_numpy: bool, transcript: Transcript):
    from msa.extractors.text import MiniLMText

    ex = MiniLMText()
    ex.numpy_encoder = use_numpy  # the instance attribute shadows the class's choice
    return ex.encode(transcript)


@pytest.mark.parametrize("transcript", [
    Transcript("I really loved this movie, it was great!"),
    Transcript("One, two, three.", words=(Word("One,", 0.0, 0.5), Word("two,", 1.0, 1.6), Word("three.", 2.0, 2.4))),
    Transcript(" ".join(["the movie was good but the plot was not"] * 60)),  # 540 tokens: overlapping windows
    Transcript("   "),
], ids=["sentence", "word_times", "long", "empty"])
def test_minilm_numpy_features_equal_torch_features(models, transcript: Transcript) -> None:
    ours, ref = _features(True, transcript), _features(False, transcript)
    assert ours.data.shape == ref.data.shape and ours.data.dtype == np.float32
    np.testing.assert_allclose(ours.data, ref.data, atol=TOL, rtol=0)
    np.testing.assert_array_equal(ours.times, ref.times)
    assert ours.extra.keys() == ref.extra.keys()
    np.testing.assert_array_equal(ours.extra["text_bert"], ref.extra["text_bert"])
    assert ours.meta == ref.meta


def test_backend_is_not_part_of_the_spec() -> None:
    """Same outputs within float32 rounding: caches and bundles made with the torch path stay valid."""
    from msa.extractors.text import MiniLMText

    torch_path = MiniLMText()
    torch_path.numpy_encoder = False
    assert MiniLMText().spec() == torch_path.spec()
    assert MiniLMText().spec().spec_hash == torch_path.spec().spec_hash


def test_minilm_extraction_never_imports_torch(fresh_python) -> None:
    code = (
        "import sys\n"
        "from msa.extractors.base import Transcript\n"
        "from msa.extractors.text import MiniLMText\n"
        "ex = MiniLMText()\n"
        "ex.spec()\n"
        "f = ex.encode(Transcript(text='what a lovely day ' * 100))\n"
        "assert f.data.shape == (402, 384), f.data.shape\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))\n"
    )
    out = fresh_python(code)
    assert out.strip() == "[]", out


def test_unsupported_folders_give_none(tmp_path: Path) -> None:
    assert load_bert_np(tmp_path) is None  # nothing there
    cfg = json.loads((Path(minilm_path()) / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_act": "relu"}))
    (tmp_path / "model.safetensors").symlink_to(Path(minilm_path()) / "model.safetensors")
    assert load_bert_np(tmp_path) is None  # not plain GELU BERT
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 7}))
    assert load_bert_np(tmp_path) is None  # a layer's weights are missing
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "model.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{nope")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert read_safetensors(tmp_path / "model.safetensors") is None
    assert load_bert_np(tmp_path) is None


def test_safetensors_reader_reads_float16_and_checks_sizes(tmp_path: Path) -> None:
    values = np.arange(6, dtype=np.float16).reshape(2, 3)
    header = {"a": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 12]},
              "skip": {"dtype": "I64", "shape": [1], "data_offsets": [12, 20]}}
    blob = json.dumps(header).encode()
    path = tmp_path / "t.safetensors"
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + values.tobytes() + np.int64(7).tobytes())
    got = read_safetensors(path)
    assert got is not None and set(got) == {"a"}
    np.testing.assert_array_equal(got["a"], values)
    header["a"]["shape"] = [3, 3]  # 18 bytes declared over a 12-byte range
    blob = json.dumps(header).encode()
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + values.tobytes() + np.int64(7).tobytes())
    assert read_safetensors(path) is None
