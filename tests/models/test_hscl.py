"""HSCL mechanism tests (MODELS.md §4.6 items 5 to 7 and the §4.1-4.5 wiring) on the tiny preset."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from msa.models import build_config
from msa.models.base import Dims, Task
from msa.models.hscl import HSCL, FusionBlock, UnimodalEncoder
from msa.models.layers.attention import sinusoidal_table
from msa.models.layers.supcr import similarity_loss, supcr_loss
from msa.core.errors import UsageError

B, L, TA, TV, DA, DV = 6, 9, 7, 5, 5, 20
DIMS = Dims(text=32, audio=DA, vision=DV, text_len=L, audio_len=TA, vision_len=TV)
MOSI = Task("mosi", -3.0, 3.0, "mosi")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(task: Task = MOSI, dims: Dims = DIMS, **overrides) -> HSCL:
    torch.manual_seed(0)
    return HSCL(build_config("hscl", task.name, "tiny", overrides), dims, task)


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 5000, (B, L), generator=g)
    ids[:, 0] = 101
    mask = torch.ones(B, L, dtype=torch.long)
    mask[:, 6:] = 0  # the last three text positions are padding
    return {
        "text_bert": torch.stack([ids, mask, torch.zeros_like(ids)], dim=1),
        "audio": torch.randn(B, TA, DA, generator=g), "audio_lengths": torch.tensor([7, 3, 1, 5, 7, 2]),
        "vision": torch.randn(B, TV, DV, generator=g), "vision_lengths": torch.tensor([5, 2, 4, 1, 5, 3]),
        "labels": torch.tensor([-2.4, -0.6, 0.0, 0.8, 1.8, 3.0]),
    }


@pytest.fixture(scope="module")
def learned() -> HSCL:
    return _model(cls_mode="learned").eval()


def test_outputs_and_loss_composition() -> None:
    model = _model(alpha=0.3, omega1=0.05, omega2=0.2)
    batch = _batch()
    out = model(batch)
    assert out["pred"].shape == (B,) and out["fused"].shape == (B, model.text.hidden_size)
    assert all(out[k].shape == (B, 16) for k in ("z_t", "z_a", "z_v", "z_at", "z_vt"))
    lo = model.loss(out, batch, epoch=1)
    y = batch["labels"]
    sup = {k: supcr_loss(out[a], out[b], y, 0.5, "positive") for k, (a, b) in
           {"ta": ("z_t", "z_a"), "tv": ("z_t", "z_v"), "f": ("z_at", "z_vt")}.items()}
    l_ta = sup["ta"] + 0.3 * similarity_loss(out["z_t"], out["z_a"])
    l_tv = sup["tv"] + 0.3 * similarity_loss(out["z_t"], out["z_v"])
    expected = (out["pred"] - y).abs().mean() + 0.05 * (l_ta + l_tv) + 0.2 * sup["f"]
    assert float(lo.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert lo.logs["supcr_fusion"] == pytest.approx(float(sup["f"].detach()), rel=1e-6)
    lo.loss.backward()
    assert model.audio.encoder.layers[0].self_attn.in_proj_weight.grad.abs().sum() > 0


def test_anchor_denominator_flag_reaches_the_loss() -> None:
    model = _model(denominator="anchor", cls_mode="learned").eval()
    batch = _batch()
    out = model(batch)
    expected = supcr_loss(out["z_at"], out["z_vt"], batch["labels"], 0.5, "anchor")
    assert model.loss(out, batch, 1).logs["supcr_fusion"] == pytest.approx(float(expected.detach()), rel=1e-6)


def test_reference_cls_is_resampled_so_eval_is_stochastic() -> None:
    model = _model().eval()
    batch = _batch()
    with torch.no_grad():
        a, b = model(batch)["pred"], model(batch)["pred"]
    assert not torch.allclose(a, b)
    assert not any("cls" in name for name, _ in model.named_parameters())


def test_learned_cls_is_a_parameter_and_eval_is_deterministic(learned: HSCL) -> None:
    batch = _batch()
    with torch.no_grad():
        assert torch.equal(learned(batch)["pred"], learned(batch)["pred"])
    names = {n for n, _ in learned.named_parameters()}
    assert {"audio.cls", "vision.cls"} <= names


def test_text_padding_is_attended_but_audio_vision_padding_is_masked(learned: HSCL) -> None:
    batch = _batch()
    with torch.no_grad():
        base = learned(batch)
        text = dict(batch, text_bert=batch["text_bert"].clone())
        text["text_bert"][:, 0, 6:] = 2000  # change only tokens under mask 0
        audio = dict(batch, audio=batch["audio"].clone())
        audio["audio"][1, 3:] += 50.0  # beyond sample 1's length (3)
        vision = dict(batch, vision=batch["vision"].clone())
        vision["vision"][3, 1:] -= 50.0  # beyond sample 3's length (1)
        moved_text, moved_audio, moved_vision = learned(text), learned(audio), learned(vision)
    assert torch.allclose(moved_text["z_t"], base["z_t"], atol=1e-5)  # BERT itself masks its padding
    assert not torch.allclose(moved_text["fused"], base["fused"])  # the fusion self-attention sees text pads
    for moved in (moved_audio, moved_vision):
        for key in ("pred", "fused", "z_a", "z_v", "z_at", "z_vt"):
            assert torch.allclose(moved[key], base[key], atol=1e-5), key
    audio["audio"][1, 2] += 1.0  # inside the length: must matter
    with torch.no_grad():
        assert not torch.allclose(learned(audio)["z_a"][1], base["z_a"][1])


def test_padding_mask_follows_lengths_plus_cls() -> None:
    enc = UnimodalEncoder(DA, 1, 8, 1, 0.0, "learned", 1.0)
    out, mask = enc(torch.randn(3, 4, DA), torch.tensor([4, 2, 0]))
    assert out.shape == (3, 5, DA)
    assert mask.tolist() == [[False] * 5, [False, False, False, True, True], [False, True, True, True, True]]


def test_prediction_depends_on_fused_rows_only_through_their_mean(learned: HSCL) -> None:
    batch = _batch()
    shift = torch.randn(learned.text.hidden_size)

    def shifted(sign: float):
        def hook(module, args, output):
            output = output.clone()
            output[:, 0] += sign * shift
            return output
        return hook

    with torch.no_grad():
        base = learned(batch)
        handles = [learned.fuse_a.register_forward_hook(shifted(1.0)), learned.fuse_v.register_forward_hook(shifted(-1.0))]
        try:
            moved = learned(batch)
        finally:
            for h in handles:
                h.remove()
    assert not torch.allclose(moved["z_at"], base["z_at"])  # R_at itself changed
    assert torch.allclose(moved["pred"], base["pred"], atol=1e-5)


def test_cross_attention_residual_flag() -> None:
    torch.manual_seed(1)
    x0_block = FusionBlock(8, 3, 2, 0.0, "x0").eval()
    x1_block = FusionBlock(8, 3, 2, 0.0, "x1").eval()
    x1_block.load_state_dict(x0_block.state_dict())
    text, other = torch.randn(2, 4, 8), torch.randn(2, 5, 3)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    assert not torch.allclose(x0_block(text, other, mask), x1_block(text, other, mask))


def test_sinusoidal_table_odd_width_is_sliced_from_the_next_even() -> None:
    odd, even = sinusoidal_table(7, 5), sinusoidal_table(7, 6)
    assert torch.equal(odd, even[:, :5])
    assert even[3, 0] == pytest.approx(float(torch.sin(torch.tensor(3.0))))
    assert even[3, 1] == pytest.approx(float(torch.cos(torch.tensor(3.0))))


def test_heads_follow_feature_widths() -> None:
    model = _model(task=Task("mosei", -3.0, 3.0, "mosi"), dims=dataclasses.replace(DIMS, audio=74, vision=35))
    assert model.audio.encoder.layers[0].self_attn.num_heads == 2  # automatic: largest divisor <= 5
    assert model.vision.encoder.layers[0].self_attn.num_heads == 5
    assert _model().audio.encoder.layers[0].self_attn.num_heads == 1  # the mosi preset's reference setting
    with pytest.raises(UsageError, match="do not divide"):
        _model(audio_heads=3)
    with pytest.raises(UsageError, match="do not divide"):
        _model(fusion_heads=5)  # the tiny text width is 32


def test_rejects_classification_and_bad_flags() -> None:
    with pytest.raises(UsageError, match="regression"):
        _model(task=Task("sims", -1, 1, "sims", n_classes=3))
    for key, value in (("cls_mode", "fixed"), ("cross_residual", "x2"), ("denominator", "key")):
        with pytest.raises(UsageError, match=key):
            _model(**{key: value})


def test_output_range_is_identity_on_mosi_and_scaled_for_phq8() -> None:
    assert _model().out_affine.tolist() == [0.0, 1.0]
    assert _model(task=Task("phq8", 0, 24, "phq8")).out_affine.tolist() == [12.0, 4.0]


def test_param_groups_and_train_settings(learned: HSCL) -> None:
    groups = {g.name: g for g in learned.param_groups()}
    assert (groups["text_encoder"].lr, groups["main"].lr) == (5e-5, 1e-3)
    assert groups["text_encoder"].weight_decay == groups["main"].weight_decay == 1e-4
    ids = [id(p) for g in groups.values() for p in g.params]
    assert len(ids) == len(set(ids)) == sum(1 for p in learned.parameters() if p.requires_grad)
    s = learned.train_settings()
    assert (s.optimizer, s.clip_norm, s.scheduler, s.select) == ("adam", 1.0, "step:11:0.1", "min:MAE")


def test_xavier_init_leaves_the_text_encoder_alone() -> None:
    torch.manual_seed(0)
    plain = HSCL(build_config("hscl", "mosi", "tiny", {"xavier_init": False}), DIMS, MOSI)
    torch.manual_seed(0)
    xavier = HSCL(build_config("hscl", "mosi", "tiny"), DIMS, MOSI)
    assert torch.equal(plain.text.bert.embeddings.word_embeddings.weight, xavier.text.bert.embeddings.word_embeddings.weight)
    assert not torch.equal(plain.head[1].weight, xavier.head[1].weight)


def test_default_config_runs_on_the_embedded_minilm() -> None:
    """The paper setting on the offline MiniLM: 384-d text, 12 fusion heads of 32, reference flags."""
    model = HSCL(build_config("hscl", "mosi"), DIMS, MOSI)
    assert model.text.hidden_size == 384 and model.fuse_a.self_attn.num_heads == 12
    assert (model.config.cls_mode, model.config.denominator, model.config.tau) == ("resample_random", "positive", 0.5)
    batch = _batch()
    out = model(batch)
    model.loss(out, batch, 1).loss.backward()
    assert out["z_t"].shape == (B, 128)
    assert model.text.bert.embeddings.word_embeddings.weight.grad is not None  # fine-tuned
