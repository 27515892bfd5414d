"""The torch port of Whisper's encoder (``whisper_port``) and ``whisper_enc``'s ``layer`` option that reads it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msa.core.errors import ExtractionError, UsageError
from msa.extractors import whisper_port
from msa.extractors.whisper_enc import WhisperEnc, load
from msa.extractors.whisper_models import base_dir
from msa.pipeline.extract.clip_input import Clip

SPEECH = Path(__file__).parent / "data" / "speech_de.flac"


@pytest.fixture(scope="module")
def model_bin() -> str:
    return str(base_dir() / "model.bin")


@pytest.fixture(scope="module")
def mel() -> np.ndarray:
    audio = Clip.from_path(SPEECH).audio(16000)[: 4 * 16000]
    m = load("base").feature_extractor(audio)
    return m[..., : m.shape[-1] // 2 * 2]


def test_port_gives_ctranslate2s_encoder_output(model_bin: str, mel: np.ndarray) -> None:
    """All blocks + the final norm reproduce CTranslate2 in float32 exactly (to float rounding)."""
    from faster_whisper import WhisperModel

    ct2 = WhisperModel(str(base_dir()), device="cpu", compute_type="float32", cpu_threads=2, local_files_only=True)
    ref = np.asarray(ct2.encode(mel), dtype=np.float32)[0]
    ours = whisper_port.EncoderPort(model_bin)(mel, final_norm=True)
    assert ours.shape == ref.shape == (mel.shape[-1] // 2, 512)
    assert np.abs(ours - ref).max() < 1e-3 * np.abs(ref).max()


def test_a_port_stops_at_its_block(model_bin: str, mel: np.ndarray) -> None:
    port = whisper_port.EncoderPort(model_bin, 3)
    assert (port.n_blocks, port.blocks, len(port.layers)) == (6, 3, 3)
    third = port(mel)
    assert not np.allclose(third, whisper_port.EncoderPort(model_bin, 4)(mel), atol=1e-2)
    with pytest.raises(ValueError, match="final_norm"):
        port(mel, final_norm=True)
    with pytest.raises(ExtractionError, match="7 asked of an encoder with 6 blocks"):
        whisper_port.EncoderPort(model_bin, 7)


def test_reader_rejects_a_file_that_is_not_a_model(tmp_path: Path) -> None:
    bad = tmp_path / "model.bin"
    bad.write_bytes((99).to_bytes(4, "little") + b"\0" * 64)
    with pytest.raises(ExtractionError, match="binary version 99"):
        whisper_port.read_variables(bad, lambda name: True)


def test_layer_option_pools_the_ports_states(model_bin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from msa.extractors import asr, whisper_enc

    clip = Clip.from_path(SPEECH)
    ex = WhisperEnc(layer=3)
    with monkeypatch.context() as m:  # the port and the mel front end only: CTranslate2's model is not loaded
        m.setattr(asr, "_load", lambda *a: pytest.fail("whisper_enc layer=3 loaded the CTranslate2 model"))
        f = ex.extract(clip)
    assert f.data.shape == (1, 1024) and f.meta["voice"] and ex.spec().dim == 1024
    audio = clip.audio(16000)[: 3 * 16000]  # the same log-mel features as the loaded model's front end
    np.testing.assert_array_equal(whisper_enc.mel_extractor(str(base_dir()))(audio), load("base").feature_extractor(audio))
    assert ex.spec().config["layer"] == 3 and ex.spec().spec_hash != WhisperEnc().spec().spec_hash
    last = WhisperEnc().extract(clip).data[0]
    assert abs(np.corrcoef(f.data[0], last)[0, 1]) < 0.9  # another representation, not the output again


def test_a_layer_past_the_last_block_is_a_usage_error(model_bin: str) -> None:
    assert whisper_port.block_count(model_bin) == 6
    with pytest.raises(UsageError, match="layer=7, but the base encoder has 6 blocks"):
        WhisperEnc(layer=7).spec()


def test_default_layer_keeps_the_older_spec() -> None:
    """Features and bundles made before ``layer`` existed keep their spec hash: the default is left out."""
    spec = WhisperEnc().spec()
    assert "layer" not in spec.config and spec.config == {"model": "base", "vad_filter": True, "window": 0.0,
                                                          "pad": False}


def test_whole_and_windowed_readouts_encode_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    port = whisper_port.load(str(base_dir() / "model.bin"), 3)
    monkeypatch.setattr(type(port), "__call__", lambda self, mel, final_norm=False: calls.append(mel.shape) or
                        np.zeros((mel.shape[-1] // 2, 512), np.float32))
    clip = Clip.from_path(SPEECH)
    WhisperEnc(layer=3).extract(clip)
    WhisperEnc(layer=3, window=1.0).extract(clip)
    assert len(calls) == 1
