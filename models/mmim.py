"""MMIM, Multimodal InfoMax (Han et al., EMNLP 2021), MODELS.md §3.

Text CLS vector + LSTM audio/vision vectors -> fusion SubNet. Two MI signals: a CPC bound between each
modality and the fused vector (fusion level), and MMILB, a Barber-Agakov bound text->vision and
text->audio with a Gaussian-mixture entropy over a one-batch memory (input level). Each epoch runs an
"mmilb" stage (only MMILB's Gaussian heads learn, loss -lld; only when ``contrast``) then the "main"
stage (L1 + alpha*NCE - beta*lld - beta*H; H only from the third batch of the epoch on).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from msa.core.config import Checked, Dropout, NonNegative, Positive, Size, in_range, positive
from msa.core.errors import UsageError

from .base import Batch, Dims, LossOut, MSAModel, ParamGroup, Task, TrainSettings
from .layers.mi import CPC, MMILB, gaussian_entropy
from .layers.seq import PackedRNN
from .layers.text import TextEncoder
from .mimrl import output_range


@dataclass(frozen=True)
class MMIMConfig(Checked):
    text_encoder: str = "minilm"  # minilm | tiny-random | local HF folder (paper: bert-base-uncased)
    finetune_text: bool = True
    d_vh: Size = 16
    d_ah: Size = 16
    d_vout: Size = 16
    d_aout: Size = 16
    n_layer: Size = 1
    bidirectional: bool = False  # the README command; the MMSA port sets it
    dropout_v: Dropout = 0.1  # used only when n_layer > 1
    dropout_a: Dropout = 0.1
    d_prjh: Size = 128
    dropout_prj: Dropout = 0.1
    cpc_layers: Size = 1
    alpha: NonNegative = 0.1  # CPC weight
    beta: NonNegative = 0.1  # lld and entropy weight
    contrast: bool = True  # the "mmilb" stage plus the NCE and lld terms
    # share of an epoch's batches the "mmilb" stage runs, the first ones (MOSEI: 0.5, as the reference)
    mmilb_passes: Annotated[float, positive(), in_range(0.0, 1.0)] = 1.0
    add_va: bool = False  # a third MMILB pair vision -> audio
    mem_size: Size = 1
    h_threshold: float = 0.0  # entropy groups: label > threshold vs label < threshold
    label_scale: Positive = 1.0  # the network predicts labels / label_scale
    clamp_phq8: bool = True  # clamp PHQ-8 predictions to [0, 24] at evaluation (the reference does not)
    lr_main: Positive = 1e-3
    lr_bert: Positive = 5e-5
    lr_mmilb: Positive = 1e-3
    weight_decay_main: NonNegative = 1e-4
    weight_decay_bert: NonNegative = 1e-4
    weight_decay_mmilb: NonNegative = 1e-4
    train: TrainSettings = TrainSettings(optimizer="adam", batch_size=32, clip_norm=1.0, early_stop=10, max_epochs=40,
                                         select="val_loss", scheduler="plateau:20:0.5")



class RNNEncoder(nn.Module):
    """LSTM over each sample's true length; the last layer's final hidden state -> Dropout -> Linear."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, n_layer: int, dropout: float, bidirectional: bool) -> None:
        super().__init__()
        p = dropout if n_layer > 1 else 0.0
        self.rnn = PackedRNN(d_in, d_hidden, n_layer, dropout=p, bidirectional=bidirectional, cell="lstm")
        self.drop = nn.Dropout(p)
        self.out = nn.Linear(self.rnn.out_size, d_out)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        return self.out(self.drop(self.rnn(x, lengths)[1]))


class MMIM(MSAModel):
    name = "mmim"
    uses_bert_ids = True
    Config = MMIMConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "mosi": {},
        "mosei": dict(mmilb_passes=0.5),  # the reference's stage 0 stops halfway through MOSEI's batches
        "phq8": dict(label_scale=25.0, h_threshold=9.5, train={"select": "max:CCC"}),
        # the published runs (Multimodal-Infomax README; docs/reproduction.md)
        "paper:mosi": dict(text_encoder="bert-base-uncased"),
        "paper:mosei": dict(text_encoder="bert-base-uncased"),
        "tiny": dict(text_encoder="tiny-random", d_vh=8, d_ah=8, d_vout=8, d_aout=8, d_prjh=16, dropout_prj=0.0,
                     train={"batch_size": 16, "max_epochs": 3, "early_stop": 3}),
    }

    def __init__(self, config: MMIMConfig, dims: Dims, task: Task) -> None:
        super().__init__(config, dims, task)
        c = config
        self.text_encoder = TextEncoder(c.text_encoder, finetune=c.finetune_text)
        d_t = self.text_encoder.hidden_size
        self.enc_v = RNNEncoder(dims.vision, c.d_vh, c.d_vout, c.n_layer, c.dropout_v, c.bidirectional)
        self.enc_a = RNNEncoder(dims.audio, c.d_ah, c.d_aout, c.n_layer, c.dropout_a, c.bidirectional)
        self.fusion_drop = nn.Dropout(c.dropout_prj)
        self.fusion_1 = nn.Linear(d_t + c.d_aout + c.d_vout, c.d_prjh)
        self.fusion_2 = nn.Linear(c.d_prjh, c.d_prjh)
        self.fusion_out = nn.Linear(c.d_prjh, 1)
        self.cpc = nn.ModuleDict({"t": CPC(d_t, c.d_prjh, c.cpc_layers), "v": CPC(c.d_vout, c.d_prjh, c.cpc_layers),
                                  "a": CPC(c.d_aout, c.d_prjh, c.cpc_layers)})
        pairs = {"tv": (d_t, c.d_vout), "ta": (d_t, c.d_aout)} | ({"va": (c.d_vout, c.d_aout)} if c.add_va else {})
        self.mi = nn.ModuleDict({k: MMILB(dx, dy) for k, (dx, dy) in pairs.items()})
        for name, p in self.named_parameters():
            if p.dim() >= 2 and not name.startswith("text_encoder."):
                nn.init.xavier_normal_(p)
        self._memory: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._batch_i = 0
        self._stage = "main"

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        t = self.text_encoder(batch["text_bert"])[:, 0]
        v = self.enc_v(batch["vision"].float(), batch.get("vision_lengths"))
        a = self.enc_a(batch["audio"].float(), batch.get("audio_lengths"))
        u1 = torch.tanh(self.fusion_1(self.fusion_drop(torch.cat([t, a, v], dim=-1))))
        u2 = torch.tanh(self.fusion_2(u1))
        raw = self.fusion_out(u2).squeeze(-1)
        pred = output_range(self, raw * self.config.label_scale)
        return {"pred": pred, "raw": raw, "t": t, "v": v, "a": a, "fusion": u2}

    # loss -------------------------------------------------------------------------------------------
    def _lld(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.mi[k](out[k[0]], out[k[1]]) for k in self.mi)

    def _entropy(self, out: dict[str, torch.Tensor], labels: torch.Tensor, use: bool) -> torch.Tensor | None:
        """The Gaussian-mixture entropy H over this batch plus the memory (when ``use``); the memory is
        then replaced by this batch. A group too small for a full-rank covariance skips that pair."""
        c = self.config
        pos, neg = labels > c.h_threshold, labels < c.h_threshold
        total = None
        for k in self.mi:
            proj = self.mi[k].project(out[k[1]])
            mem = self._memory.setdefault(k, [])
            if use and mem:
                p_all = torch.cat([m[0] for m in mem] + [proj[pos]])
                n_all = torch.cat([m[1] for m in mem] + [proj[neg]])
                if min(p_all.size(0), n_all.size(0)) > proj.size(1):
                    h = gaussian_entropy(p_all, n_all)
                    if torch.isfinite(h):
                        total = h if total is None else total + h
            mem.append((proj[pos].detach(), proj[neg].detach()))
            del mem[: -c.mem_size]
        return total

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, epoch: int, stage: str = "main") -> LossOut:
        c = self.config
        labels = batch["labels"].float().view(-1).to(out["raw"].device)
        self._stage = stage
        if stage == "mmilb":  # not detached: the trainer clips over every gradient, as the reference does;
            lld = self._lld(out)  # after_backward then drops all but MMILB's
            return LossOut(-lld, {"lld": float(lld.detach())})
        if stage != "main":
            raise UsageError(f"mmim has stages 'mmilb' and 'main', not {stage!r}")
        task = F.l1_loss(out["raw"], labels / c.label_scale)
        logs = {"task": float(task.detach())}
        if not self.training:
            return LossOut(task, logs)
        loss = task
        if c.contrast:
            nce = sum(self.cpc[m](out[m], out["fusion"]) for m in ("t", "v", "a"))
            lld = self._lld(out)
            loss = loss + c.alpha * nce - c.beta * lld
            logs.update(nce=float(nce.detach()), lld=float(lld.detach()))
        h = self._entropy(out, labels, use=self._batch_i > c.mem_size)
        self._batch_i += 1
        if h is not None:
            loss = loss - c.beta * h
            logs["H"] = float(h.detach())
        return LossOut(loss, logs)

    # schedule and hooks -----------------------------------------------------------------------------
    def stages(self, epoch: int) -> list[tuple[str, float]]:
        return [("mmilb", self.config.mmilb_passes), ("main", 1)] if self.config.contrast else [("main", 1)]

    def param_groups(self) -> list[ParamGroup]:
        c = self.config
        mmilb = list(self.mi.parameters())
        skip = {id(p) for p in mmilb} | {id(p) for p in self.text_encoder.parameters()}
        groups = [
            ParamGroup("bert", [p for p in self.text_encoder.parameters() if p.requires_grad], c.lr_bert,
                       c.weight_decay_bert),
            ParamGroup("main", [p for p in self.parameters() if p.requires_grad and id(p) not in skip], c.lr_main,
                       c.weight_decay_main),
            ParamGroup("mmilb", mmilb, c.lr_mmilb, c.weight_decay_mmilb, stage="mmilb"),
        ]
        return [g for g in groups if g.params]


    def on_epoch_start(self, epoch: int) -> None:
        self._memory, self._batch_i = {}, 0

    def after_backward(self, out: dict[str, torch.Tensor], batch: Batch, epoch: int) -> None:
        """Drop gradients the current stage must not use (MMILB heads in "main", the rest in "mmilb")."""
        own = {id(p) for p in self.mi.parameters()}
        for p in self.parameters():
            if (id(p) in own) != (self._stage == "mmilb"):
                p.grad = None
