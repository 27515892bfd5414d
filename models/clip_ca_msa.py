"""CLIP-CA-MSA (Chen et al., J. Zhengzhou Univ. (Eng.) 2024), MODELS.md §5: text + CLIP frame features.

Per-frame CLIP ViT-B/16 embeddings (the ``clip_vitb16`` extractor; at most 6 frames) go through a
Transformer video encoder with a learned class token and temporal positions; the subtitle goes
through a BERT-family encoder with a prepended prompt (PIFT's prompt embedding) and a Linear to the
shared width. Two cross-attention blocks (text->video, video->text) give ``h_t2v`` and ``h_v2t``
(CLS rows). The video head classifies by scaled cosine similarity to frozen label-prompt embeddings
``H_P``, the text head is a Linear with focal loss, and the two losses are combined with learned
homoscedastic-uncertainty weights ``s_t``, ``s_v``. The prediction averages the two softmaxes.

Classification (``task.n_classes == 3``): classes neg/neu/pos from MMSA's 3-class bins,
``pred = class - 1``. Regression (``n_classes == 0``): each head's classes are ordered anchors spread
over the task range, each head predicts the expected anchor under its softmax, trained with L1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from msa.models.base import Batch, Dims, LossOut, MSAModel, ParamGroup, Task, TrainSettings
from msa.models.layers.attention import CrossAttentionBlock, ResidualAttentionBlock
from msa.models.layers.text import TINY, TextEncoder, minilm_path
from msa.core.config import Checked, Dropout, NonNegative, Positive, Size, one_of
from msa.core.errors import MissingBackendError, UsageError
from msa.core.labels import THREE_CLASS_EDGES

LABEL_SOURCES = ("auto", "text", "clip", "random")
WEIGHTINGS = ("uncertainty", "uncertainty_cls", "sum")
CLS_BOUNDS = THREE_CLASS_EDGES  # MMSA 3-class bins: y <= -0.1 neg, (-0.1, 0.1] neu, > 0.1 pos


@dataclass(frozen=True)
class ClipCAMSAConfig(Checked):
    n_classes: Annotated[int, one_of(0, 3)] = 3  # 3: the paper's neg/neu/pos classifier; 0: the regression variant (MOSI, PHQ-8)
    text_encoder: str = "minilm"
    finetune_text: bool = True
    text_prompt: str = "the sentiment of this video is"  # prepended after [CLS]; "" disables
    label_source: Annotated[str, one_of(*LABEL_SOURCES)] = "auto"  # auto (clip if clip_weights else text) | text | clip | random
    label_template: str = "this is a {} video"
    label_words: tuple[str, ...] = ("negative", "neutral", "positive")
    clip_model: str = "ViT-B-16"  # open_clip architecture of clip_weights
    clip_weights: str = ""  # local open_clip checkpoint: label embeddings + video-block initialisation
    width: Size = 512
    max_frames: Size = 6
    video_layers: Size = 4
    video_heads: Size = 8
    quick_gelu: bool = True  # CLIP's activation in the video blocks
    cross_heads: Size = 8
    cross_ffn: Size = 2048
    cross_residual: Annotated[str, one_of("input", "projected")] = "input"  # input (PSR) | projected (Eq. 11 literally)
    dropout: Dropout = 0.1
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: Positive = 100.0
    focal_gamma: NonNegative = 2.0
    focal_alpha: NonNegative = 1.0
    weighting: Annotated[str, one_of(*WEIGHTINGS)] = "uncertainty"  # uncertainty (1/2 e^-s L + 1/2 s) | uncertainty_cls (e^-s L + 1/2 s) | sum
    fusion: Annotated[str, one_of("mean", "precision")] = "mean"  # mean of softmaxes (PSR) | precision (weights e^-s_m)
    unimodal_labels: bool = False  # text head on labels_T, video head on labels_V (when present)
    lr_pretrained: Positive = 1e-5
    lr_new: Positive = 1e-4
    weight_decay: NonNegative = 0.01
    # select auto: max:Acc_3 when classifying, max:CCC on PHQ-8, else min:MAE
    train: TrainSettings = TrainSettings(optimizer="adamw", batch_size=16, early_stop=8, max_epochs=20, select="auto")


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 1.0) -> torch.Tensor:
    """``mean(-alpha (1 - p_y)^gamma log p_y)``; gamma=0, alpha=1 is cross-entropy."""
    log_p = F.log_softmax(logits, dim=-1).gather(-1, target.long()[:, None]).squeeze(-1)
    return (-alpha * (1 - log_p.exp()).pow(gamma) * log_p).mean()


def uncertainty_weighted(losses: torch.Tensor, log_vars: torch.Tensor, mode: str = "uncertainty") -> torch.Tensor:
    """Kendall et al.: ``sum_m 1/2 e^{-s_m} L_m + 1/2 s_m`` with ``s_m = log sigma_m^2``.

    ``uncertainty_cls`` is Kendall's classification form ``e^{-s} L + 1/2 s``; ``sum`` ignores ``s``.
    """
    if mode == "sum":
        return losses.sum()
    scale = 0.5 if mode == "uncertainty" else 1.0
    return (scale * torch.exp(-log_vars) * losses + 0.5 * log_vars).sum()


def class_targets(y: torch.Tensor) -> torch.Tensor:
    """Regression labels -> 0 neg / 1 neu / 2 pos with MMSA's left-open, right-closed bins."""
    bounds = torch.tensor(CLS_BOUNDS, dtype=y.dtype, device=y.device)
    return torch.bucketize(y, bounds, right=False)


def similarity_logits(h: torch.Tensor, labels: torch.Tensor, log_scale: torch.Tensor, max_scale: float) -> torch.Tensor:
    """``exp(tau_s) * cos(h, H_P)`` (B, K): CLIP's scaled cosine similarity, scale clamped at ``max_scale``."""
    return log_scale.exp().clamp(max=max_scale) * F.normalize(h, dim=-1) @ F.normalize(labels, dim=-1).t()


def sample_frames(x: torch.Tensor, lengths: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep at most m frames spread uniformly over each clip's valid frames; returns (B, m, D) and a pad mask."""
    b, t, d = x.shape
    n = lengths.to(x.device).long().clamp(0, t)[:, None]
    j = torch.arange(m, device=x.device)[None, :]
    spread = torch.round(j * (n - 1).clamp_min(0) / max(m - 1, 1)).long()
    idx = torch.where(n > m, spread, j).clamp_max(t - 1)
    pad = j >= n.clamp_max(m)
    frames = x.gather(1, idx[..., None].expand(b, m, d)).masked_fill(pad[..., None], 0.0)
    return frames, pad


class VideoEncoder(nn.Module):
    """``[H_CLS; H_1..H_m] + P_time`` through pre-LN CLIP blocks with the frame mask -> (B, m+1, width)."""

    def __init__(self, in_dim: int, width: int, layers: int, heads: int, max_frames: int, dropout: float, quick_gelu: bool) -> None:
        super().__init__()
        self.max_frames = max_frames
        self.proj = nn.Identity() if in_dim == width else nn.Linear(in_dim, width)
        self.cls = nn.Parameter(torch.randn(width) * width ** -0.5)
        self.positions = nn.Parameter(torch.randn(max_frames + 1, width) * 0.01)
        self.blocks = nn.ModuleList([ResidualAttentionBlock(width, heads, dropout, quick_gelu=quick_gelu) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames, pad = sample_frames(x, lengths, self.max_frames)
        h = self.proj(frames)
        h = torch.cat([self.cls.to(h.dtype).expand(h.shape[0], 1, -1), h], dim=1) + self.positions.to(h.dtype)
        mask = torch.cat([torch.zeros_like(pad[:, :1]), pad], dim=1)
        for block in self.blocks:
            h = block(h, key_padding_mask=mask)
        return self.ln_post(h), mask


def load_tokenizer(name: str) -> Any:
    """The tokenizer matching a TextEncoder name (the tiny random BERT shares MiniLM's vocabulary)."""
    from transformers import AutoTokenizer

    path = minilm_path() if name in ("minilm", TINY) else name
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise MissingBackendError(f"no offline tokenizer for text encoder {name!r}; pass a local model folder") from e


def load_clip(model_name: str, weights: str) -> nn.Module:
    """An open_clip model from a local checkpoint file (a tag such as 'openai' would download: refused)."""
    if not Path(weights).is_file():
        raise MissingBackendError(f"clip_weights {weights!r} is not a file: supply a local open_clip {model_name} checkpoint")
    try:
        import open_clip
    except ImportError as e:
        raise MissingBackendError("clip_weights needs open_clip (pip install 'msa[clip]')") from e
    try:
        return open_clip.create_model(model_name, pretrained=weights, load_weights=True).eval()
    except (OSError, RuntimeError, ValueError) as e:
        raise MissingBackendError(f"cannot load open_clip {model_name!r} weights from {weights!r}: {e}") from e


class ClipCAMSA(MSAModel):
    """Text + video sentiment classifier (3 classes) with a regression variant (see module docstring)."""

    name: ClassVar[str] = "clip_ca_msa"
    uses_bert_ids: ClassVar[bool] = True
    Config = ClipCAMSAConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "mosi": {"n_classes": 0},
        "mosei": {"n_classes": 0},
        "custom": {"n_classes": 0},  # an arbitrary label range: the regression variant
        "sims": {},  # the paper's dataset; a Chinese encoder (e.g. bert-base-chinese) + Chinese template is closer
        "phq8": {"n_classes": 0, "label_template": "a video of a {} person",
                 "label_words": ("not depressed", "moderately depressed", "severely depressed")},
        # the paper's setting (docs/reproduction.md): Chinese RoBERTa-wwm-ext (its best PIFT backbone), Chinese prompts
        "paper:sims": {"text_encoder": "hfl/chinese-roberta-wwm-ext", "text_prompt": "这段视频的情感是",
                       "label_template": "这是一段{}的视频", "label_words": ("消极", "中性", "积极")},
        "tiny": {"text_encoder": "tiny-random", "label_source": "random", "width": 32, "video_layers": 1,
                 "video_heads": 2, "cross_heads": 2, "cross_ffn": 64, "train": {"max_epochs": 2},
                 "lr_new": 1e-3, "lr_pretrained": 1e-3},
    }

    def __init__(self, config: ClipCAMSAConfig, dims: Dims, task: Task) -> None:
        super().__init__(config, dims, task)
        c = config
        self._check(c, task)
        self.n_classes = len(c.label_words)
        self.classify = task.n_classes > 0
        self.text = TextEncoder(c.text_encoder, finetune=c.finetune_text)
        self.text_proj = nn.Linear(self.text.hidden_size, c.width)
        tokenizer = load_tokenizer(c.text_encoder) if c.text_prompt or self._label_source() == "text" else None
        prompt = tokenizer(c.text_prompt, add_special_tokens=False)["input_ids"] if c.text_prompt else []
        self.register_buffer("prompt_ids", torch.tensor(prompt, dtype=torch.long), persistent=False)
        self.video = VideoEncoder(dims.vision, c.width, c.video_layers, c.video_heads, c.max_frames, c.dropout, c.quick_gelu)
        self.t2v = CrossAttentionBlock(c.width, c.cross_heads, c.cross_ffn, c.dropout, c.cross_residual)
        self.v2t = CrossAttentionBlock(c.width, c.cross_heads, c.cross_ffn, c.dropout, c.cross_residual)
        self.text_head = nn.Linear(c.width, self.n_classes)
        self.register_buffer("label_emb", self._label_embeddings(tokenizer))  # frozen H_P source
        d_label = self.label_emb.shape[1]
        self.label_proj = nn.Identity() if d_label == c.width else nn.Linear(d_label, c.width)
        self.logit_scale = nn.Parameter(torch.tensor(float(c.logit_scale_init)))
        self.log_vars = nn.Parameter(torch.zeros(2))  # s_t, s_v = log sigma^2, initialised to 0
        anchors = torch.linspace(task.low, task.high, self.n_classes)
        self.register_buffer("anchors", anchors, persistent=False)

    @staticmethod
    def _check(c: ClipCAMSAConfig, task: Task) -> None:
        if task.n_classes != c.n_classes:
            raise UsageError(f"clip_ca_msa config n_classes={c.n_classes} but the task has n_classes={task.n_classes}")
        if c.n_classes and len(c.label_words) != 3:
            raise UsageError("clip_ca_msa classification uses the 3 MMSA sentiment classes (neg/neu/pos)")
        if len(c.label_words) < 2:
            raise UsageError("clip_ca_msa needs at least two label words")
        if c.label_source == "clip" and not c.clip_weights:
            raise MissingBackendError("label_source 'clip' needs clip_weights: a local open_clip ViT-B/16 checkpoint")
        if c.clip_weights and c.label_source in ("text", "random"):
            raise UsageError(f"clip_weights is set but label_source is {c.label_source!r}: use 'auto' or 'clip'")

    def _label_source(self) -> str:
        c = self.config
        return ("clip" if c.clip_weights else "text") if c.label_source == "auto" else c.label_source

    def prompts(self) -> list[str]:
        return [self.config.label_template.format(word) for word in self.config.label_words]

    def _label_embeddings(self, tokenizer: Any) -> torch.Tensor:
        """Frozen label-prompt features: CLIP text tower, this model's (pretrained) text encoder, or random."""
        c, source = self.config, self._label_source()
        if source == "random":
            return torch.randn(self.n_classes, c.width, generator=torch.Generator().manual_seed(0))
        if source == "clip":
            clip = load_clip(c.clip_model, c.clip_weights)
            import open_clip

            with torch.no_grad():
                emb = clip.encode_text(open_clip.get_tokenizer(c.clip_model)(self.prompts())).float()
            self._init_video_from_clip(clip)
            return emb
        enc = tokenizer(self.prompts(), padding=True, return_tensors="pt")
        ids = torch.stack([enc["input_ids"], enc["attention_mask"], torch.zeros_like(enc["input_ids"])], dim=1)
        was_training = self.text.training
        self.text.eval()
        with torch.no_grad():
            hidden = self.text(ids)
        self.text.train(was_training)
        mask = enc["attention_mask"][..., None].to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1)  # mean pooling, MiniLM's sentence embedding

    def _init_video_from_clip(self, clip: nn.Module) -> None:
        """CLIP4Clip: temporal blocks from CLIP's first text blocks, positions from its positional embedding."""
        blocks = getattr(getattr(clip, "transformer", None), "resblocks", [])
        pos = getattr(clip, "positional_embedding", None)
        if pos is None or pos.shape[1] != self.config.width or len(blocks) < len(self.video.blocks):
            return  # a different width: keep the random initialisation
        with torch.no_grad():
            for mine, theirs in zip(self.video.blocks, blocks):
                mine.load_state_dict(theirs.state_dict())  # same parameter names as open_clip
            self.video.positions.copy_(pos[: self.config.max_frames + 1])

    def _text_ids(self, text_bert: torch.Tensor) -> torch.Tensor:
        """Insert the prompt tokens right after [CLS] (ids, mask 1, type 0)."""
        if not len(self.prompt_ids):
            return text_bert
        b, limit = text_bert.shape[0], getattr(self.text.bert.config, "max_position_embeddings", 512)
        if text_bert.shape[-1] + len(self.prompt_ids) > limit:
            raise UsageError(f"clip_ca_msa: {text_bert.shape[-1]} text tokens + a {len(self.prompt_ids)}-token prompt "
                             f"exceed the text encoder's {limit} positions; shorten text_prompt or the text")
        p = self.prompt_ids.to(text_bert.device)
        prompt = torch.stack([p, torch.ones_like(p), torch.zeros_like(p)])[None].expand(b, -1, -1)
        return torch.cat([text_bert[..., :1], prompt.to(text_bert.dtype), text_bert[..., 1:]], dim=-1)

    def label_features(self) -> torch.Tensor:
        return self.label_proj(self.label_emb)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        ids = self._text_ids(batch["text_bert"])
        h_t = self.text_proj(self.text(ids))
        text_pad = ids[:, 1] == 0
        text_pad[:, 0] = False  # [CLS] always attends, so no row is fully masked
        h_v, video_pad = self.video(batch["vision"], batch["vision_lengths"])
        h_t2v = self.t2v(h_t, h_v, video_pad)[:, 0]
        h_v2t = self.v2t(h_v, h_t, text_pad)[:, 0]
        z_t = self.text_head(h_t2v)
        z_v = similarity_logits(h_v2t, self.label_features(), self.logit_scale, self.config.logit_scale_max)
        p_t, p_v = z_t.softmax(-1), z_v.softmax(-1)
        if self.config.fusion == "precision":
            w = torch.exp(-self.log_vars)
            probs = (w[0] * p_t + w[1] * p_v) / w.sum()
        else:
            probs = 0.5 * (p_t + p_v)
        out = {"logits_t": z_t, "logits_v": z_v, "probs": probs}
        if self.classify:
            out["logits"] = probs.clamp_min(1e-12).log()  # log of the fused distribution: softmax(logits) = probs
            out["pred"] = (probs.argmax(-1) - 1).to(z_t.dtype)
        else:
            out["score_t"], out["score_v"] = p_t @ self.anchors, p_v @ self.anchors
            out["pred"] = probs @ self.anchors  # the expected anchor under the fused distribution
        return out

    def loss(self, out: dict[str, torch.Tensor], batch: Batch, epoch: int, stage: str = "main") -> LossOut:
        c = self.config
        y = batch["labels"].view(-1)
        y_t = batch.get("labels_T", y) if c.unimodal_labels else y
        y_v = batch.get("labels_V", y) if c.unimodal_labels else y
        if self.classify:
            loss_t = focal_loss(out["logits_t"], class_targets(y_t.view(-1)), c.focal_gamma, c.focal_alpha)
            loss_v = F.cross_entropy(out["logits_v"], class_targets(y_v.view(-1)))
        else:
            loss_t = F.l1_loss(out["score_t"], y_t.view(-1).to(out["score_t"].dtype))
            loss_v = F.l1_loss(out["score_v"], y_v.view(-1).to(out["score_v"].dtype))
        total = uncertainty_weighted(torch.stack([loss_t, loss_v]), self.log_vars, c.weighting)
        logs = {"loss_t": float(loss_t.detach()), "loss_v": float(loss_v.detach()),
                "s_t": float(self.log_vars[0].detach()), "s_v": float(self.log_vars[1].detach()),
                "logit_scale": float(self.logit_scale.detach().exp().clamp(max=c.logit_scale_max))}
        return LossOut(total, logs)

    def param_groups(self) -> list[ParamGroup]:
        c = self.config
        special = {id(self.logit_scale), id(self.log_vars)}
        text = [p for p in self.text.parameters() if p.requires_grad]
        new = [p for n, p in self.named_parameters() if not n.startswith("text.") and id(p) not in special]
        groups = [ParamGroup("new", new, c.lr_new, c.weight_decay),
                  ParamGroup("uncertainty", [self.log_vars, self.logit_scale], c.lr_new, 0.0)]
        if text:
            groups.insert(0, ParamGroup("text_encoder", text, c.lr_pretrained, c.weight_decay))
        return groups

    def auto_select(self) -> str:
        return "max:Acc_3" if self.classify else ("max:CCC" if self.task.metrics == "phq8" else "min:MAE")
