"""LMF (MODELS.md 6.3): low-rank fusion equals a linear map of TFN's tensor; fusion weights stay fixed."""
from __future__ import annotations

import pytest
import torch

from msa.models import build_config, build_model
from msa.models.base import Dims, Task
from msa.models.lmf import LMF
from msa.models.tfn import average_inputs, fusion_tensor
from feature_batches import feature_batch

MOSI = Task("mosi", -3.0, 3.0, "mosi")
DIMS = Dims(text=10, audio=4, vision=6, text_len=5, audio_len=7, vision_len=6, n_train=8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_batch(n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    return feature_batch(DIMS, n, seed)


def tiny(**overrides) -> LMF:
    torch.manual_seed(0)
    return build_model("lmf", DIMS, MOSI, build_config("lmf", "mosi", "tiny", overrides)).eval()


def subnet_outputs(model: LMF, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    audio, vision = average_inputs(batch, model.dims, model.config.average)
    return model.audio_subnet(audio), model.video_subnet(vision), model.text_subnet(batch["text"])


@pytest.mark.parametrize("rank", [1, 3])
def test_low_rank_fusion_is_a_linear_map_of_the_tfn_tensor(rank: int):
    model = tiny(rank=rank)
    batch = make_batch()
    with torch.no_grad():
        if rank == 1:
            model.fusion_weights.fill_(1.0)
        model.fusion_bias.fill_(0.25)
        pred = model(batch)["pred"]
        z = fusion_tensor(*subnet_outputs(model, batch))
        # the explicit TFN weight: W = Σ_r w_r · W_a^r ⊗ W_v^r ⊗ W_t^r, flattened in TFN's order
        w = sum(model.fusion_weights[0, r] * torch.einsum("a,v,t->avt", model.audio_factor[r, :, 0],
                                                          model.video_factor[r, :, 0], model.text_factor[r, :, 0])
                for r in range(rank))
    assert z.shape[1] == w.numel() == (model.config.hidden_audio + 1) * (model.config.hidden_video + 1) * (
        model.config.hidden_text // 2 + 1)
    torch.testing.assert_close(pred, z @ w.reshape(-1) + 0.25, atol=1e-5, rtol=1e-5)


def test_text_out_is_half_the_text_hidden_size():
    model = tiny()
    assert model.text_subnet.linear.out_features == model.config.hidden_text // 2
    assert model.text_factor.shape == (model.config.rank, model.config.hidden_text // 2 + 1, 1)


def test_fusion_weights_are_never_optimised_by_default():
    model = tiny().train()
    groups = {g.name: g for g in model.param_groups()}
    assert set(groups) == {"subnets", "factors"}
    assert groups["factors"].lr == model.config.factor_lr
    grouped = {id(p) for g in groups.values() for p in g.params}
    assert id(model.fusion_weights) not in grouped and not model.fusion_weights.requires_grad
    before = model.fusion_weights.detach().clone(), model.fusion_bias.detach().clone()
    opt = torch.optim.Adam([{"params": g.params, "lr": g.lr} for g in groups.values()])
    batch = make_batch()
    for _ in range(3):
        opt.zero_grad()
        model.loss(model(batch), batch, 1).loss.backward()
        opt.step()
    assert torch.equal(model.fusion_weights, before[0]) and torch.equal(model.fusion_bias, before[1])
    optimised = tiny(optimise_fusion=True)
    assert "fusion" in {g.name for g in optimised.param_groups()} and optimised.fusion_weights.requires_grad
