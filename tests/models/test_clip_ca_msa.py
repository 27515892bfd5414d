"""CLIP-CA-MSA mechanism tests (MODELS.md §5.9) on the tiny preset, plus its label sources and variants."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from msa.models import build_config
from msa.models.base import Dims, Task
from msa.models.clip_ca_msa import (ClipCAMSA, VideoEncoder, class_targets, focal_loss, sample_frames,
                                    similarity_logits, uncertainty_weighted)
from msa.core.errors import MissingBackendError, UsageError
from msa.core.labels import three_classes

B, L, TV, DV = 6, 8, 9, 512
DIMS = Dims(text=32, audio=5, vision=DV, text_len=L, audio_len=4, vision_len=TV)
SIMS = Task("sims", -1.0, 1.0, "sims", n_classes=3)
MOSI = Task("mosi", -3.0, 3.0, "mosi")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(task: Task = SIMS, dims: Dims = DIMS, **overrides) -> ClipCAMSA:
    torch.manual_seed(0)
    return ClipCAMSA(build_config("clip_ca_msa", task.name, "tiny", overrides), dims, task)


def _batch(seed: int = 0, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 5000, (B, L), generator=g)
    ids[:, 0] = 101
    mask = torch.ones(B, L, dtype=torch.long)
    mask[:, 5:] = 0
    return {
        "text_bert": torch.stack([ids, mask, torch.zeros_like(ids)], dim=1),
        "audio": torch.zeros(B, 4, 5), "audio_lengths": torch.full((B,), 4),
        "vision": torch.randn(B, TV, DV, generator=g), "vision_lengths": torch.tensor([9, 6, 3, 1, 7, 9]),
        "labels": torch.tensor([-0.8, -0.2, 0.0, 0.2, 0.6, 1.0]) * scale,
    }


@pytest.fixture(scope="module")
def model() -> ClipCAMSA:
    return _model().eval()


# --- 5.9.1 homoscedastic uncertainty weighting -----------------------------------------------------
def test_log_variances_are_parameters_in_the_optimiser_groups(model: ClipCAMSA) -> None:
    groups = {g.name: g for g in model.param_groups()}
    assert {id(p) for p in groups["uncertainty"].params} == {id(model.log_vars), id(model.logit_scale)}
    c = model.config
    assert groups["uncertainty"].weight_decay == 0.0 and groups["uncertainty"].lr == groups["new"].lr == c.lr_new
    assert groups["text_encoder"].lr == c.lr_pretrained and groups["new"].weight_decay == 0.01
    assert ClipCAMSA.Config().lr_new == 1e-4 and ClipCAMSA.Config().lr_pretrained == 1e-5  # paper defaults (PSR)
    ids = [id(p) for g in groups.values() for p in g.params]
    assert len(ids) == len(set(ids)) == sum(1 for p in model.parameters() if p.requires_grad)
    assert "label_emb" in dict(model.named_buffers()) and "label_emb" not in dict(model.named_parameters())


def test_uncertainty_gradient_formula_and_minimiser() -> None:
    losses = torch.tensor([0.7, 2.5])
    for s0 in (-1.0, 0.0, 1.3):
        s = torch.full((2,), s0, requires_grad=True)
        uncertainty_weighted(losses, s).backward()
        assert torch.allclose(s.grad, 0.5 * (1 - torch.exp(-torch.tensor(s0)) * losses), atol=1e-6)
    s = losses.log().clone().requires_grad_()
    uncertainty_weighted(losses, s).backward()
    assert torch.allclose(s.grad, torch.zeros(2), atol=1e-6)  # s* = log Loss


def test_uncertainty_weights_are_learned_and_stay_finite_only_with_the_log_term() -> None:
    losses = torch.tensor([0.4, 3.0])
    s = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([s], lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        uncertainty_weighted(losses, s).backward()
        opt.step()
    assert torch.allclose(s.detach(), losses.log(), atol=1e-3)
    # without 1/2 s the gradient -1/2 e^{-s} L is negative everywhere: s only ever grows
    for s0 in torch.linspace(-5, 20, 26):
        s = s0.clone().requires_grad_()
        (0.5 * torch.exp(-s) * losses[1]).backward()
        assert float(s.grad) < 0


def test_model_loss_gradient_on_log_variances(model: ClipCAMSA) -> None:
    model.zero_grad()
    batch = _batch()
    lo = model.loss(model(batch), batch, epoch=1)
    lo.loss.backward()
    expected = 0.5 * (1 - torch.tensor([lo.logs["loss_t"], lo.logs["loss_v"]]))  # s = 0 at init
    assert torch.allclose(model.log_vars.grad, expected, atol=1e-5)
    assert lo.logs["s_t"] == lo.logs["s_v"] == 0.0


def test_kendall_classification_and_plain_sum_variants() -> None:
    losses, s = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -0.5])
    assert float(uncertainty_weighted(losses, s, "uncertainty_cls")) == pytest.approx(
        float((torch.exp(-s) * losses + 0.5 * s).sum()))
    assert float(uncertainty_weighted(losses, s, "sum")) == pytest.approx(3.0)


# --- 5.9.2 focal loss ------------------------------------------------------------------------------
def test_focal_loss_reduces_to_cross_entropy_and_downweights_confident_samples() -> None:
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(10, 3, generator=g) * 3, torch.randint(0, 3, (10,), generator=g)
    ce = F.cross_entropy(logits, target)
    assert float(focal_loss(logits, target, gamma=0.0, alpha=1.0)) == pytest.approx(float(ce), rel=1e-6)
    for gamma in (0.5, 2.0, 5.0):
        assert float(focal_loss(logits, target, gamma)) <= float(ce)
    confident, unsure = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([[0.3, 0.0, 0.0]])
    zero = torch.tensor([0])

    def ratio(z: torch.Tensor) -> float:
        return float(focal_loss(z, zero, 2.0) / F.cross_entropy(z, zero))

    assert ratio(confident) < 0.01 < ratio(unsure)


# --- 5.9.3 similarity classification -------------------------------------------------------------
def test_similarity_logits_bounds_invariance_and_sharpness() -> None:
    g = torch.Generator().manual_seed(2)
    h, labels = torch.randn(5, 16, generator=g), torch.randn(3, 16, generator=g)
    tau = torch.tensor(math.log(1 / 0.07))
    z = similarity_logits(h, labels, tau, 100.0)
    assert z.abs().max() <= math.exp(float(tau)) + 1e-4
    assert torch.allclose(similarity_logits(h * 7.5, labels * 0.01, tau, 100.0), z, atol=1e-4)
    entropy = [float(-(similarity_logits(h, labels, torch.tensor(t), 100.0).softmax(-1) *
                       similarity_logits(h, labels, torch.tensor(t), 100.0).log_softmax(-1)).sum(-1).mean())
               for t in (0.0, 1.0, 2.0, 3.0)]
    assert entropy == sorted(entropy, reverse=True) and entropy[0] > entropy[-1] + 0.1
    capped = similarity_logits(h, labels, torch.tensor(10.0), 100.0)
    assert capped.abs().max() <= 100.0 + 1e-3


def test_logit_scale_starts_at_clip_value(model: ClipCAMSA) -> None:
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(1 / 0.07))


# --- 5.9.4 video encoder ---------------------------------------------------------------------------
def test_video_encoder_outputs_m_plus_one_tokens_and_is_order_sensitive() -> None:
    torch.manual_seed(0)
    enc = VideoEncoder(DV, 32, 1, 2, 6, 0.0, True).eval()
    frames = torch.randn(2, 6, DV)
    full = torch.tensor([6, 6])
    out, mask = enc(frames, full)
    assert out.shape == (2, 7, 32) and not mask.any()
    permuted, _ = enc(frames[:, torch.tensor([5, 4, 3, 2, 1, 0])], full)
    assert not torch.allclose(permuted[:, 0], out[:, 0], atol=1e-4)  # temporal positions make order matter
    short = frames.clone()
    short[:, 3:] = 99.0  # frames beyond a length of 3 are masked out
    assert torch.allclose(enc(short, torch.tensor([3, 3]))[0][:, 0], enc(frames, torch.tensor([3, 3]))[0][:, 0], atol=1e-5)


def test_frame_sampling_spreads_long_clips_and_pads_short_ones() -> None:
    x = torch.arange(12, dtype=torch.float32).view(1, 12, 1).expand(2, 12, 1).contiguous()
    frames, pad = sample_frames(x, torch.tensor([11, 4]), 6)
    assert frames[0, :, 0].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]  # round(j * 10 / 5)
    assert frames[1, :, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 0.0, 0.0]
    assert pad.tolist() == [[False] * 6, [False] * 4 + [True] * 2]
    few, few_pad = sample_frames(torch.ones(1, 2, 3), torch.tensor([2]), 6)  # fewer stored frames than m
    assert few.shape == (1, 6, 3) and few_pad.tolist() == [[False, False, True, True, True, True]]


# --- 5.9.5 shapes, classes and outputs -----------------------------------------------------------
def test_classification_shapes_and_prediction(model: ClipCAMSA) -> None:
    batch = _batch()
    with torch.no_grad():
        out = model(batch)
    assert out["logits_t"].shape == out["logits_v"].shape == (B, 3)
    probs = 0.5 * (out["logits_t"].softmax(-1) + out["logits_v"].softmax(-1))
    assert torch.allclose(out["probs"], probs, atol=1e-6) and torch.allclose(out["logits"].softmax(-1), probs, atol=1e-5)
    assert torch.equal(out["pred"], (probs.argmax(-1) - 1).float())
    assert set(out["pred"].tolist()) <= {-1.0, 0.0, 1.0}
    assert model.train_settings().select == "max:Acc_3" and model.train_settings().optimizer == "adamw"


def test_class_bins_match_the_metrics() -> None:
    y = torch.tensor([-1.0, -0.2, -0.1, -0.05, 0.0, 0.1, 0.1001, 0.2, 3.0])
    assert class_targets(y).tolist() == three_classes(y.numpy()).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_classification_loss_uses_focal_text_and_ce_video(model: ClipCAMSA) -> None:
    batch = _batch()
    with torch.no_grad():
        out = model(batch)
        lo = model.loss(out, batch, 1)
    target = class_targets(batch["labels"])
    assert lo.logs["loss_t"] == pytest.approx(float(focal_loss(out["logits_t"], target, 2.0, 1.0)), rel=1e-5)
    assert lo.logs["loss_v"] == pytest.approx(float(F.cross_entropy(out["logits_v"], target)), rel=1e-5)
    assert float(lo.loss) == pytest.approx(0.5 * (lo.logs["loss_t"] + lo.logs["loss_v"]), rel=1e-5)


def test_text_prompt_is_inserted_after_cls(model: ClipCAMSA) -> None:
    batch = _batch()
    ids = model._text_ids(batch["text_bert"])
    p = len(model.prompt_ids)
    assert p > 0 and ids.shape == (B, 3, L + p)
    assert torch.equal(ids[:, 0, 1:1 + p], model.prompt_ids.expand(B, -1)) and bool((ids[:, 1, :1 + p] == 1).all())
    assert torch.equal(ids[:, :, 1 + p:], batch["text_bert"][:, :, 1:])
    assert _model(text_prompt="").prompt_ids.numel() == 0


def test_regression_variant_predicts_the_expected_anchor() -> None:
    m = _model(task=MOSI).eval()
    batch = _batch(scale=3.0)
    with torch.no_grad():
        out = m(batch)
        lo = m.loss(out, batch, 1)
    assert m.anchors.tolist() == [-3.0, 0.0, 3.0] and "logits" not in out
    assert torch.allclose(out["pred"], 0.5 * (out["score_t"] + out["score_v"]), atol=1e-5)
    assert bool(((out["pred"] >= -3) & (out["pred"] <= 3)).all())
    assert lo.logs["loss_t"] == pytest.approx(float((out["score_t"] - batch["labels"]).abs().mean()), rel=1e-5)
    assert m.train_settings().select == "min:MAE"
    phq = _model(task=Task("phq8", 0.0, 24.0, "phq8"))
    assert phq.anchors.tolist() == [0.0, 12.0, 24.0] and phq.train_settings().select == "max:CCC"


def test_precision_fusion_weights_by_learned_variances() -> None:
    m = _model(fusion="precision").eval()
    with torch.no_grad():
        m.log_vars.copy_(torch.tensor([0.0, 50.0]))  # the video head is pure noise
        out = m(_batch())
    assert torch.allclose(out["probs"], out["logits_t"].softmax(-1), atol=1e-5)


def test_config_errors() -> None:
    with pytest.raises(UsageError, match="n_classes"):
        ClipCAMSA(build_config("clip_ca_msa", "sims", "tiny"), DIMS, MOSI)
    with pytest.raises(UsageError, match="weighting"):
        _model(weighting="max")
    with pytest.raises(MissingBackendError, match="clip_weights"):
        _model(label_source="clip")
    with pytest.raises(MissingBackendError, match="not a file"):
        _model(label_source="auto", clip_weights="/nonexistent/vit-b-16.pt")
    with pytest.raises(UsageError, match="label_source"):
        _model(clip_weights="/nonexistent/vit-b-16.pt")  # the tiny preset's random labels would ignore them


# --- label sources -------------------------------------------------------------------------------
def test_text_label_source_is_the_frozen_pretrained_encoder_on_prompts() -> None:
    m = _model(label_source="text", width=48, cross_heads=2, video_heads=2)
    assert m.prompts() == ["this is a negative video", "this is a neutral video", "this is a positive video"]
    assert m.label_emb.shape == (3, m.text.hidden_size) and not m.label_emb.requires_grad
    assert isinstance(m.label_proj, torch.nn.Linear)  # 32-d text features -> 48-d shared width
    assert not torch.allclose(m.label_emb[0], m.label_emb[2])
    from msa.models.clip_ca_msa import load_tokenizer
    enc = load_tokenizer("tiny-random")(m.prompts()[1:2], return_tensors="pt")
    ids = torch.stack([enc["input_ids"], enc["attention_mask"], torch.zeros_like(enc["input_ids"])], dim=1)
    m.text.eval()
    with torch.no_grad():
        pooled = m.text(ids).mean(1)[0]  # one prompt, no padding: the plain mean
    assert torch.allclose(m.label_emb[1], pooled, atol=1e-5)


def test_clip_label_source_and_video_init_from_open_clip(tmp_path) -> None:
    open_clip = pytest.importorskip("open_clip")
    cfg = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    (tmp_path / "msa-test-tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path)
    torch.manual_seed(3)
    clip = open_clip.create_model("msa-test-tiny-clip")
    torch.save(clip.state_dict(), tmp_path / "w.pt")
    m = _model(label_source="auto", clip_model="msa-test-tiny-clip", clip_weights=str(tmp_path / "w.pt"))
    tokens = open_clip.get_tokenizer("msa-test-tiny-clip")(m.prompts())
    with torch.no_grad():
        assert torch.allclose(m.label_emb, clip.encode_text(tokens), atol=1e-5)
    assert isinstance(m.label_proj, torch.nn.Identity)
    assert torch.equal(m.video.blocks[0].mlp.c_fc.weight, clip.transformer.resblocks[0].mlp.c_fc.weight)
    assert torch.equal(m.video.positions, clip.positional_embedding[:7])


def test_default_config_uses_minilm_prompts_and_a_learned_label_projection() -> None:
    m = ClipCAMSA(build_config("clip_ca_msa", "sims"), DIMS, SIMS)
    assert m.label_emb.shape == (3, 384) and isinstance(m.label_proj, torch.nn.Linear)
    assert isinstance(m.video.proj, torch.nn.Identity)  # CLIP frame features are already 512-d
    assert F.cosine_similarity(m.label_emb[0], m.label_emb[2], dim=0) < 0.999
    batch = _batch()
    out = m(batch)
    m.loss(out, batch, 1).loss.backward()
    assert out["logits_v"].shape == (B, 3) and m.label_proj.weight.grad is not None


def test_cross_attention_wiring_text_queries_video_and_video_queries_text(model: ClipCAMSA) -> None:
    """Issue 15.9: t2v takes the text tokens as queries and the video tokens (with the frame mask) as
    keys/values; v2t the reverse, with the text padding mask. Swapping query and key fails here."""
    seen: dict[str, tuple] = {}
    hooks = [model.text_proj.register_forward_hook(lambda m, a, out: seen.__setitem__("text", out)),
             model.video.register_forward_hook(lambda m, a, out: seen.__setitem__("video", out))]
    hooks += [getattr(model, n).register_forward_pre_hook(lambda m, a, n=n: seen.__setitem__(n, a))
              for n in ("t2v", "v2t")]
    batch = _batch(3)
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for h in hooks:
            h.remove()
    h_t, (h_v, video_pad) = seen["text"], seen["video"]
    q, kv, pad = seen["t2v"]
    assert q is h_t and kv is h_v and pad is video_pad
    q, kv, pad = seen["v2t"]
    assert q is h_v and kv is h_t
    n_prompt = h_t.shape[1] - L
    want = torch.cat([torch.zeros(B, 1 + n_prompt, dtype=torch.bool), batch["text_bert"][:, 1, 1:] == 0], 1)
    assert torch.equal(pad, want)  # the text padding mask ([CLS] and prompt always attend)


def test_text_and_frame_padding_never_reach_the_outputs(model: ClipCAMSA) -> None:
    """Changing the ids under the text mask, or frames beyond a clip's length, changes no output."""
    base = _batch(4)
    other = {k: v.clone() for k, v in base.items()}
    ids = other["text_bert"][:, 0]
    ids[other["text_bert"][:, 1] == 0] = 7777  # padded text positions
    lengths = other["vision_lengths"]
    other["vision"][torch.arange(TV)[None, :] >= lengths[:, None]] = 5.0  # frames past each clip's end
    with torch.no_grad():
        a, b = model(base), model(other)
    for key in ("logits_t", "logits_v", "pred"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)
    inside = {k: v.clone() for k, v in base.items()}
    inside["text_bert"][:, 0, 2] = 4321  # a real token: must change the outputs
    with torch.no_grad():
        assert not torch.allclose(model(inside)["logits_v"], a["logits_v"])
