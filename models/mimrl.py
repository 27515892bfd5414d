"""MIMRL: mutual-information-based disentangled multimodal representation learning (Sun et al., IEEE TAC
2025), with the CubeMLP fusion encoder (MODELS.md §2).

Encoders give text/audio/vision sequences; their time-means T_F/A_F/V_F and the fused vector F_F feed
five MI estimators (fusion information I(F;T/A/V), invariant I(T;A)+I(T;V)) and six classifier-based
CMI estimators (specific and complementary information, conditioned on the label C). Training has two
stages per epoch (``stages``): "vmi" trains only the estimators (from the second epoch on), "main" trains the
network with the signed, weighted total loss. The CMI product samples come from a memory of the
previous epoch's main-stage features, swapped at the end of each epoch by the hooks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from msa.core.config import Checked, Count, Dropout, NonNegative, Positive, Size, one_of, parses
from msa.core.errors import UsageError

from .base import Batch, Dims, LossOut, MSAModel, ParamGroup, Task, TrainSettings
from .layers.cubemlp import ACTIVATIONS, MLPEncoder, parse_flags, parse_sizes
from .layers.mi import BOUNDS, CMI_FORMS, CMI_LAST, CRITICS, CMIEstimator, MIEstimator
from .layers.seq import PackedRNN
from .layers.text import TextEncoder

MI_TERMS: dict[str, tuple[str, str]] = {"f_t": ("F", "T"), "f_a": ("F", "A"), "f_v": ("F", "V"),
                                        "t_a": ("T", "A"), "t_v": ("T", "V")}
# name -> (X, Y, Z) for I(X;Y|Z); the product rows draw X from a neighbour in Z
CMI_TERMS: dict[str, tuple[str, str, str]] = {"ac_t": ("A", "C", "T"), "ta_c": ("T", "A", "C"),
                                              "vc_t": ("V", "C", "T"), "tv_c": ("T", "V", "C"),
                                              "tc_a": ("T", "C", "A"), "tc_v": ("T", "C", "V")}
STAGE1_ORDER = ("f_t", "f_a", "f_v", "t_a", "t_v", "ac_t", "ta_c", "vc_t", "tv_c", "tc_a", "tc_v")
INFO_ORDER = ("I_fusion_t", "I_fusion_a", "I_fusion_v", "I_inv", "I_spec_t", "I_spec_a", "I_spec_v", "I_comp")
FEATURES = ("C", "F", "T", "A", "V")


def information_terms(e: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The eight information amounts of §2.3 from the raw MI/CMI estimates."""
    return {
        "I_fusion_t": e["f_t"], "I_fusion_a": e["f_a"], "I_fusion_v": e["f_v"],
        "I_inv": e["t_a"] + e["t_v"],
        "I_spec_t": e["tc_a"] + e["tc_v"] - e["ta_c"] - e["tv_c"],
        "I_spec_a": e["ac_t"] - e["ta_c"],
        "I_spec_v": e["vc_t"] - e["tv_c"],
        "I_comp": e["ta_c"] + e["tv_c"],
    }


def stage2_loss(task: torch.Tensor, estimates: dict[str, torch.Tensor], c2: tuple[float, ...]) -> torch.Tensor:
    """``L_task - sum_i c2_i * info_i``: every information amount is maximised (§2.6)."""
    info = information_terms(estimates)
    return task - sum(c * info[k] for c, k in zip(c2, INFO_ORDER))


def ccc_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 - CCC`` with population moments and +1e-10 in the denominator (MIMRL's AVEC2019 loss)."""
    pm, ym = pred.mean(), y.mean()
    cov = ((pred - pm) * (y - ym)).mean()
    return 1 - 2 * cov / (pred.var(unbiased=False) + y.var(unbiased=False) + (pm - ym) ** 2 + 1e-10)


def output_range(model: MSAModel, pred: torch.Tensor) -> torch.Tensor:
    """With ``clamp_phq8`` (the default), PHQ-8 predictions are clamped to the score range [0, 24] at
    evaluation (training keeps gradients); the MIMRL and MMIM reference code does not clamp (off in the
    ``paper`` presets). Sentiment predictions stay unclipped, as MMSA's MAE/Corr expect."""
    if model.training or model.task.metrics != "phq8" or not model.config.clamp_phq8:
        return pred
    return pred.clamp(model.task.low, model.task.high)


CubeSizes = Annotated[str, parses(parse_sizes, "sizes like 50-3-128=10-3-128 (L-K-D >= 1 per block)")]
CubeFlags = Annotated[str, parses(parse_flags, "flags like 1-0 (one per block)")]


@dataclass(frozen=True)
class MIMRLConfig(Checked):
    text_encoder: str = "minilm"  # minilm | tiny-random | local HF folder (paper: bert-base-uncased)
    finetune_text: bool = True
    d_common: Size = 128
    encoder: Annotated[str, one_of("gru", "lstm", "conv")] = "gru"  # gru (2-layer BiGRU) | lstm (1-layer BiLSTM) | conv (Conv1d k=3)
    activation: Annotated[str, one_of(*ACTIVATIONS)] = "gelu"
    time_len: Size = 100
    d_hiddens: CubeSizes = "10-2-128=5-2-128"
    d_outs: CubeSizes = "10-2-128=5-2-128"
    dropout_mlp: tuple[Dropout, ...] = (0.5, 0.5, 0.5)  # CubeMLP L, K, D
    dropout: tuple[Dropout, ...] = (0.5, 0.5, 0.5, 0.5)  # t, a, v, classifier
    bias: bool = False
    ln_first: bool = False
    res_project: CubeFlags = "1-1"
    critic: Annotated[str, one_of(*CRITICS)] = "separate"
    bound: Annotated[str, one_of(*BOUNDS)] = "infonce"  # infonce (reference code) | nwj (paper) | dv
    critic_hidden: Size = 256
    critic_embed: Size = 128
    critic_layers: Size = 2
    cmi_hidden: Size = 256
    cmi_form: Annotated[str, one_of(*CMI_FORMS)] = "code"  # code (reference, AQ) | standard (classifier NWJ)
    cmi_last: Annotated[str, one_of(*CMI_LAST)] = "sigmoid"
    k_neighbor: Size = 2
    c1: tuple[NonNegative, ...] = (0.1,) * 11  # stage 1 weights, order STAGE1_ORDER
    c2: tuple[NonNegative, ...] = (0.1,) * 8  # stage 2 weights, order INFO_ORDER
    stage1_n: Count = 1
    loss: Annotated[str, one_of("mae", "ccc")] = "mae"  # mae | ccc
    label_scale: Positive = 1.0  # the network predicts labels / label_scale (PHQ-8: 25, as in MIMRL)
    clamp_phq8: bool = True  # clamp PHQ-8 predictions to [0, 24] at evaluation (the reference does not)
    lr: Positive = 4e-3
    bert_lr_rate: float = 0.01  # <= 0: the text encoder uses lr
    mi_lr_rate: NonNegative = 1.0
    weight_decay: NonNegative = 0.0
    train: TrainSettings = TrainSettings(optimizer="adam", batch_size=16, clip_value=1.0, early_stop=70, max_epochs=70,
                                         select="min:MAE", scheduler="step:60:0.1")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, n in (("dropout_mlp", 3), ("dropout", 4), ("c1", 11), ("c2", 8)):
            if len(getattr(self, name)) != n:
                raise UsageError(f"mimrl config {name} needs {n} values, got {len(getattr(self, name))}")
        if not len(parse_sizes(self.d_hiddens)) == len(parse_sizes(self.d_outs)) == len(parse_flags(self.res_project)):
            raise UsageError("mimrl config d_hiddens, d_outs and res_project need the same number of blocks")


_CUBE_PUBLISHED = dict(time_len=100, d_hiddens="50-3-128=10-3-128", d_outs="50-3-128=10-3-128",
                       dropout_mlp=(0.0, 0.0, 0.0), dropout=(0.1,) * 4, bias=True, res_project="1-1",
                       k_neighbor=2, stage1_n=2, bert_lr_rate=0.01)
_CUBE_TRAIN = dict(clip_value=1.5, max_epochs=70, early_stop=70)


class SequenceEncoder(nn.Module):
    """Audio/vision encoder of §2.1: BiGRU (2 layers) or BiLSTM (1 layer) over the frames that are not all
    zeros, directions summed, or a Conv1d; then ReLU(LayerNorm)."""

    def __init__(self, d_in: int, d_out: int, kind: str = "gru") -> None:
        super().__init__()
        self.kind, self.d_out = kind, d_out
        if kind == "conv":
            self.net: nn.Module = nn.Conv1d(d_in, d_out, kernel_size=3, padding=1)
        else:
            self.net = PackedRNN(d_in, d_out, 2 if kind == "gru" else 1, bidirectional=True, cell=kind)
            for name, p in self.net.named_parameters():
                if "weight_hh" in name:
                    nn.init.orthogonal_(p)
        self.norm = nn.LayerNorm(d_out, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "conv":
            y = self.net(x.transpose(1, 2)).transpose(1, 2)
        else:
            y = self.net(x, (x != 0).any(-1).sum(1), return_outputs=True)[0]
            y = F.pad(y, (0, 0, 0, x.size(1) - y.size(1)))  # re-pad to the input length
            y = y[..., : self.d_out] + y[..., self.d_out:]
        return F.relu(self.norm(y))


class MIMRL(MSAModel):
    name = "mimrl"
    uses_bert_ids = True
    Config = MIMRLConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "mosi": dict(_CUBE_PUBLISHED, c1=(1.0,) * 11, c2=(0.01,) * 8, lr=4e-3,
                     train=dict(_CUBE_TRAIN, batch_size=128, scheduler="multistep:9,60:0.1")),
        "mosei": dict(_CUBE_PUBLISHED, c1=(1.0,) * 11, c2=(0.01,) * 8, lr=4e-3,
                      train=dict(_CUBE_TRAIN, batch_size=128, scheduler="multistep:9,60:0.1")),
        "phq8": dict(_CUBE_PUBLISHED, activation="relu", c1=(1.0,) * 11, c2=(0.1,) * 8, lr=1e-3,
                     loss="ccc", label_scale=25.0,
                     train=dict(_CUBE_TRAIN, batch_size=32, scheduler="multistep:50,60:0.1", select="max:CCC")),
        # the published runs (MIMRL README / Run2.ipynb; docs/reproduction.md): BERT-base, audio and vision
        # min-max scaled to [-1, 1] with train-split statistics (MOSI/MOSEI), PHQ-8 predictions not clamped
        "paper:mosi": dict(text_encoder="bert-base-uncased", train={"normalize": "minmax"}),
        "paper:mosei": dict(text_encoder="bert-base-uncased", train={"normalize": "minmax"}),
        "paper:phq8": dict(text_encoder="bert-base-uncased", clamp_phq8=False),
        "tiny": dict(text_encoder="tiny-random", d_common=16, time_len=8, d_hiddens="6-3-16=4-3-16",
                     d_outs="6-3-16=4-3-16", dropout_mlp=(0.0, 0.0, 0.0), dropout=(0.0,) * 4, critic_hidden=32,
                     critic_embed=16, critic_layers=1, cmi_hidden=32, stage1_n=1,
                     train={"batch_size": 16, "max_epochs": 3, "early_stop": 3}),
    }

    def __init__(self, config: MIMRLConfig, dims: Dims, task: Task) -> None:
        super().__init__(config, dims, task)
        c, d = config, config.d_common
        self.text_encoder = TextEncoder(c.text_encoder, finetune=c.finetune_text)
        self.proj_t = nn.Linear(self.text_encoder.hidden_size, d, bias=False)
        self.enc_a = SequenceEncoder(dims.audio, d, c.encoder)
        self.enc_v = SequenceEncoder(dims.vision, d, c.encoder)
        self.drops = nn.ModuleList(nn.Dropout(p) for p in c.dropout[:3])
        try:
            self.fusion = MLPEncoder((c.time_len, 3, d), parse_sizes(c.d_hiddens), parse_sizes(c.d_outs),
                                     c.activation, c.bias, c.dropout_mlp, parse_flags(c.res_project), c.ln_first)
        except ValueError as e:
            raise UsageError(f"mimrl config: {e}") from e
        d_f = self.fusion.d_out[2]
        self.classifier = nn.Linear(d_f, 1) if d_f <= 128 else nn.Sequential(
            nn.Linear(d_f, 128), nn.ReLU(), nn.Dropout(c.dropout[3]), nn.Linear(128, 1))
        width = {"F": d_f, "T": d, "A": d, "V": d, "C": 1}
        self.vmi = nn.ModuleDict({n: MIEstimator(width[x], width[y], c.critic, c.bound, c.critic_hidden,
                                                 c.critic_embed, c.critic_layers) for n, (x, y) in MI_TERMS.items()})
        self.vcmi = nn.ModuleDict({n: CMIEstimator((width[x], width[y], width[z]), d, c.cmi_hidden, c.k_neighbor,
                                                   c.cmi_last, c.cmi_form) for n, (x, y, z) in CMI_TERMS.items()})
        self.memory: dict[str, torch.Tensor] | None = None  # previous epoch's main-stage features
        self._collect: list[dict[str, torch.Tensor]] = []
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._stage = "main"

    # forward --------------------------------------------------------------------------------------
    def _fit_time(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad (or crop) the time axis to ``time_len``, as the reference's F.pad does."""
        return F.pad(x, (0, 0, 0, self.config.time_len - x.size(1)))

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        t = self.proj_t(self.text_encoder(batch["text_bert"]))
        a, v = self.enc_a(batch["audio"].float()), self.enc_v(batch["vision"].float())
        t, a, v = (drop(s) for drop, s in zip(self.drops, (t, a, v)))
        x = torch.stack([self._fit_time(s) for s in (t, a, v)], dim=2)  # [B, time_len, 3, d]
        fused = self.fusion(x).mean(dim=2).mean(dim=1)  # compose over modalities, then time
        raw = self.classifier(fused).squeeze(-1)
        return {"pred": output_range(self, raw * self.config.label_scale), "raw": raw, "F": fused,
                "T": t.mean(1), "A": a.mean(1), "V": v.mean(1)}

    # information terms ------------------------------------------------------------------------------
    def _features(self, out: dict[str, torch.Tensor], y: torch.Tensor, detach: bool) -> dict[str, torch.Tensor]:
        feats = {k: out[k] for k in ("F", "T", "A", "V")}
        if detach:
            feats = {k: f.detach() for k, f in feats.items()}
        feats["C"] = y.view(-1, 1).to(out["T"].dtype)  # the label; the CMI estimators tile it to d_common
        return feats

    def _can_estimate(self, batch_size: int) -> bool:
        k = self.config.k_neighbor
        return (self.memory is not None and batch_size >= 2
                and self.memory["C"].size(0) > max(1, batch_size // k) + k)

    def estimates(self, feats: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Raw MI/CMI estimates and the CMI classifiers' BCE losses for one batch (needs the memory)."""
        assert self.memory is not None
        est = {n: self.vmi[n](feats[x], feats[y]) for n, (x, y) in MI_TERMS.items()}
        bce = {}
        for n, (x, y, z) in CMI_TERMS.items():
            memory = (self.memory[x], self.memory[y], self.memory[z])
            est[n], bce[n] = self.vcmi[n](feats[x], feats[y], feats[z], memory)
        return est, bce

    # loss -------------------------------------------------------------------------------------------
    def _task_loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(raw, y) if self.config.loss == "mae" else ccc_loss(raw, y)

    def _estimator_params(self) -> list[nn.Parameter]:
        return [p for m in (self.vmi, self.vcmi) for p in m.parameters()]

    def _accumulate(self, values: dict[str, torch.Tensor]) -> None:
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v.detach())
            self._counts[k] = self._counts.get(k, 0) + 1

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, epoch: int, stage: str = "main") -> LossOut:
        y = batch["labels"].float().view(-1).to(out["raw"].device) / self.config.label_scale
        self._stage = stage
        if stage == "vmi":
            return self._stage1_loss(out, y)
        if stage != "main":
            raise UsageError(f"mimrl has stages 'vmi' and 'main', not {stage!r}")
        task = self._task_loss(out["raw"], y)
        logs = {"task": float(task.detach())}
        if not self.training:
            return LossOut(task, logs)
        feats = self._features(out, y, detach=False)
        self._collect.append({k: f.detach() for k, f in feats.items()})
        if not self._can_estimate(y.numel()):
            return LossOut(task, logs)  # first epoch: the memory is empty and L2 = L_task
        est, _ = self.estimates(feats)
        self._accumulate(information_terms(est) | {f"cmi_{n}": est[n] for n in CMI_TERMS})
        return LossOut(stage2_loss(task, est, self.config.c2), logs)

    def _stage1_loss(self, out: dict[str, torch.Tensor], y: torch.Tensor) -> LossOut:
        """``L1 = sum_i c1_i l_i``: -MI for the critics, BCE for the CMI classifiers (estimators only)."""
        if not self._can_estimate(y.numel()):
            return LossOut(sum(p.sum() * 0.0 for p in self._estimator_params()), {})
        est, bce = self.estimates(self._features(out, y, detach=True))
        terms = {n: -est[n] for n in MI_TERMS} | bce
        return LossOut(sum(c * terms[n] for c, n in zip(self.config.c1, STAGE1_ORDER)), {})

    # schedule and hooks -----------------------------------------------------------------------------
    def stages(self, epoch: int) -> list[tuple[str, int]]:
        """Estimators first, once a memory exists (from the second epoch on), then the main network."""
        if self.memory is None or self.config.stage1_n < 1:
            return [("main", 1)]
        return [("vmi", self.config.stage1_n), ("main", 1)]

    def param_groups(self) -> list[ParamGroup]:
        c = self.config
        est = {id(p) for p in self._estimator_params()}
        text = [p for p in self.text_encoder.parameters() if p.requires_grad]
        skip = est | {id(p) for p in self.text_encoder.parameters()}
        main = [p for p in self.parameters() if p.requires_grad and id(p) not in skip]
        groups = [ParamGroup("bert", text, c.lr * c.bert_lr_rate if c.bert_lr_rate > 0 else c.lr, c.weight_decay),
                  ParamGroup("main", main, c.lr, c.weight_decay),
                  ParamGroup("vmi", self._estimator_params(), c.lr * c.mi_lr_rate, c.weight_decay, stage="vmi")]
        return [g for g in groups if g.params]


    def on_train_start(self, loader: Any) -> None:
        self.memory = None

    def on_epoch_start(self, epoch: int) -> None:
        self._collect, self._sums, self._counts = [], {}, {}

    def after_backward(self, out: dict[str, torch.Tensor], batch: Batch, epoch: int) -> None:
        """Drop gradients that the current stage must not use (estimators in "main", nothing else in "vmi")."""
        est = {id(p) for p in self._estimator_params()}
        for p in self.parameters():
            if (id(p) in est) != (self._stage == "vmi"):
                p.grad = None

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        """Swap in this epoch's main-stage features as the memory; return the epoch's mean information
        amounts (I_fusion_t/a/v, I_inv, I_spec_t/a/v, I_comp) and raw CMI estimates (cmi_*)."""
        if self._collect:
            self.memory = {k: torch.cat([b[k] for b in self._collect]) for k in FEATURES}
        self._collect = []
        return {k: self._sums[k] / self._counts[k] for k in self._sums}
