"""The transformers-free BERT (models/layers/bert.py) matches transformers on MiniLM, ids and states alike."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from msa.models.layers.bert import BertShape, load_bert, load_tokenizer
from msa.models.layers.text import minilm_path

TEXTS = [
    "I really LOVED this movie!!",
    "Café naïve résumé, 東京 and an emoji 😀\twith tabs\nand newlines",
    "don't won't can't   umm uh  ok",
    "",
    "word " * 300,
]


@pytest.fixture(scope="module")
def reference():
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_path()
    return (AutoTokenizer.from_pretrained(folder, local_files_only=True),
            AutoModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=False).eval())


def test_tokenizer_ids_and_offsets_match_transformers(reference) -> None:
    ref_tok, _ = reference
    tok = load_tokenizer(minilm_path())
    assert tok is not None and tok.model_max_length == ref_tok.model_max_length
    assert (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id) == (
        ref_tok.cls_token_id, ref_tok.sep_token_id, ref_tok.pad_token_id)
    for text in TEXTS:
        ours = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        theirs = ref_tok(text, add_special_tokens=False, return_offsets_mapping=True)
        assert ours["input_ids"] == theirs["input_ids"], text
        assert ours["offset_mapping"] == [tuple(o) for o in theirs["offset_mapping"]], text
        assert tok(text)["input_ids"] == ref_tok(text)["input_ids"], text


def test_hidden_states_match_transformers_on_a_padded_batch(reference) -> None:
    ref_tok, ref = reference
    model = load_bert(minilm_path())
    assert model is not None and not model.training
    enc = ref_tok(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="pt")
    enc["token_type_ids"][1, 3:6] = 1  # exercise the segment embedding too
    with torch.no_grad():
        ours = model(**enc).last_hidden_state
        theirs = ref(**enc).last_hidden_state
    keep = enc["attention_mask"].bool()
    assert torch.allclose(ours[keep], theirs[keep], atol=1e-5), (ours - theirs)[keep].abs().max()


def test_state_dict_names_match_transformers(reference) -> None:
    _, ref = reference
    ours = set(load_bert(minilm_path()).state_dict())
    theirs = {k for k in ref.state_dict() if not k.startswith("embeddings.") or k.endswith((".weight", ".bias"))}
    assert ours == theirs


def test_training_mode_applies_dropout_and_backpropagates() -> None:
    model = load_bert(minilm_path()).train()
    ids = torch.tensor([[101, 2307, 3185, 102]])
    a, b = model(ids).last_hidden_state, model(ids).last_hidden_state
    assert not torch.equal(a, b)
    a.sum().backward()
    assert model.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_folders_it_does_not_cover_fall_back(tmp_path: Path) -> None:
    assert load_bert(tmp_path) is None and load_tokenizer(tmp_path) is None
    base = {"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 16}
    assert BertShape.from_config({**base, "model_type": "bert"}) is not None
    assert BertShape.from_config({**base, "model_type": "roberta"}) is None
    assert BertShape.from_config({**base, "model_type": "bert", "hidden_act": "relu"}) is None
    assert BertShape.from_config({"model_type": "bert", "hidden_size": 8}) is None
    (tmp_path / "config.json").write_text(json.dumps({**base, "model_type": "roberta"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert load_bert(tmp_path) is None  # never reads weights it cannot place
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer"}))
    assert load_tokenizer(tmp_path) is None


def test_minilm_text_path_never_imports_transformers(fresh_python) -> None:
    """The default extractor and the default bundle's model load without transformers (cold start)."""
    code = (
        "import sys\n"
        "from msa.extractors.base import Transcript\n"
        "from msa.extractors.text import MiniLMText\n"
        "from msa.models import MODELS, build_config\n"
        "from msa.models.base import Dims, Task\n"
        "f = MiniLMText().encode(Transcript(text='what a lovely day'))\n"
        "assert f.data.shape[1] == 384, f.data.shape\n"
        "cls = MODELS.get('text_regressor')\n"
        "cls(build_config('text_regressor', 'mosi', 'default', {}), Dims(384, 1, 1, 64, 1, 1), Task('mosi', -3.0, 3.0, 'mosi'))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))\n"
    )
    out = fresh_python(code)
    assert out.strip() == "[]", out
