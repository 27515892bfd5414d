"""One training loop for every model in the zoo.

Models contribute named parameter groups, their loss, training settings, stages and hooks
(``models/base.py``); this loop owns seeding, optimisers, gradient accumulation, clipping, schedulers,
AMP, validation, model selection on the validation split only, early stopping and the single final
test evaluation. Epochs are numbered from 1 (Self-MM's momentum update uses the epoch number).
"""
from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from msa.models.base import MSAModel, Task, TrainSettings, parse_scheduler, parse_select
from msa.models.layers.classify import class_loss

from msa.pipeline.train.data import Split
from msa.core.errors import MsaError, UsageError
from msa.pipeline.train.loader import DeviceLoader, NormStats, make_loader
from msa.core.labels import three_classes
from msa.pipeline.train.metrics import compute_metrics

IMPROVE_EPS = 1e-6  # MMSA: an epoch is better only if it improves by more than this


class TrainingError(MsaError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to change."""

    reason = "training_failed"


@dataclass
class FitResult:
    """Outcome of one seed: the selected epoch, its validation metrics, the one test evaluation."""

    seed: int
    best_epoch: int
    epochs_run: int
    stopped: str  # early_stop | max_epochs | callback
    valid: dict[str, float]
    test: dict[str, float] | None
    history: list[dict[str, Any]]
    seconds: float
    notes: list[str] = field(default_factory=list)
    amp: str = "off"  # the training steps' autocast dtype ("bf16") or "off"; evaluation is always fp32


def resolve_device(device: str | None = None) -> torch.device:
    """``auto``/None -> CUDA when available, else CPU; asking for CUDA without one is a usage error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise UsageError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels where torch has them (warn, not fail, where it has none); restored after."""
    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)


def build_optimizers(model: MSAModel, settings: TrainSettings) -> tuple[dict[str, torch.optim.Optimizer], list[str]]:
    """One optimiser per stage from the model's named groups (Adam: weight_decay is L2; AdamW: decoupled)."""
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}  # TrainSettings.optimizer allows exactly these
    by_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
    seen: dict[int, str] = {}
    for g in model.param_groups():
        params = [p for p in g.params if p.requires_grad]
        for p in params:
            if id(p) in seen:
                raise ValueError(f"parameter in two groups: {seen[id(p)]!r} and {g.name!r}")
            seen[id(p)] = g.name
        if params:
            by_stage[g.stage].append({"params": params, "lr": g.lr, "weight_decay": g.weight_decay, "name": g.name})
    names = {id(p): n for n, p in model.named_parameters()}
    orphans = [names[id(p)] for p in model.parameters() if p.requires_grad and id(p) not in seen]
    notes = []
    if orphans:  # e.g. LMF's fusion weights, which MMSA never optimises (kept on purpose)
        notes.append(f"{len(orphans)} trainable tensor(s) in no parameter group, never stepped: {', '.join(orphans[:6])}"
                     + (" ..." if len(orphans) > 6 else ""))
    # one fused kernel per step instead of a dozen passes over every tensor: TFN's step on CPU 25% faster
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in model.parameters())
    return {stage: kinds[settings.optimizer](groups, fused=fused) for stage, groups in by_stage.items()}, notes


def build_schedulers(optimizers: dict[str, torch.optim.Optimizer], spec: str | None) -> list[Any]:
    """``plateau:<patience>:<factor>`` (on the validation loss; on the training loss when no epoch is validated:
    ``select = "last"`` without a valid split), ``step:<size>:<gamma>``, ``multistep:<m1,m2>:<gamma>``.

    ``spec`` comes from a validated ``TrainSettings``, so it parses."""
    if not spec:
        return []
    kind, (a, b) = parse_scheduler(spec)
    sched = torch.optim.lr_scheduler
    if kind == "plateau":
        return [sched.ReduceLROnPlateau(o, mode="min", patience=a, factor=b) for o in optimizers.values()]
    if kind == "step":
        return [sched.StepLR(o, step_size=a, gamma=b) for o in optimizers.values()]
    return [sched.MultiStepLR(o, milestones=list(a), gamma=b) for o in optimizers.values()]


def amp_dtype_for(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 autocast for the training steps when asked for and the CUDA device supports it, else None."""
    if amp and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> Any:
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


@torch.no_grad()
def predict(model: MSAModel, loader: Any) -> dict[str, Any]:
    """Eval-mode fp32 outputs over a loader: ``pred`` (N,), ``labels`` (N,), ``logits`` (N, C) or None,
    ``loss``. Always full precision, so selection in ``fit`` and ``msa-eval`` give the same numbers."""
    model.eval()
    preds, labels, logits, sizes, batch_losses = [], [], [], [], []
    eval_loss = getattr(model, "eval_loss", None)
    for batch in loader:
        out = model(batch)
        preds.append(out["pred"].detach().float().reshape(-1).cpu())
        labels.append(batch["labels"].detach().float().reshape(-1).cpu())
        sizes.append(int(batch["labels"].shape[0]))
        if "logits" in out:
            logits.append(out["logits"].detach().float().cpu())
        if eval_loss is not None:
            batch_losses.append(float(eval_loss(out, batch)))
    res: dict[str, Any] = {
        "pred": torch.cat(preds).numpy(), "labels": torch.cat(labels).numpy(),
        "logits": torch.cat(logits).numpy() if logits else None, "batch_sizes": sizes,
        "batch_losses": batch_losses if eval_loss is not None else None,
    }
    res["loss"] = float(np.dot(batch_losses, sizes) / max(sum(sizes), 1)) if eval_loss is not None else None
    return res


def _batch_mean_loss(r: dict[str, Any]) -> float:
    """MMSA's validation loss: the mean over batches of each batch's mean loss (L1 of ``pred`` unless the
    model has ``eval_loss``), so a short last batch weighs as much as a full one."""
    if r["batch_losses"] is not None:
        return float(np.mean(r["batch_losses"]))
    errors = np.abs(r["pred"].astype(np.float64) - r["labels"])
    return float(np.mean([e.mean() for e in np.split(errors, np.cumsum(r["batch_sizes"])[:-1])]))


def evaluate(model: MSAModel, loader: Any, task: Task, batch_loss: bool = False) -> dict[str, float]:
    """The task's metrics plus ``loss``: the model's ``eval_loss`` if it has one, else L1 of ``pred``
    (MMSA's validation loss) or, for classification, cross-entropy of ``logits``; averaged over samples.
    ``batch_loss`` adds ``loss_mmsa``: the loss averaged over batches and rounded to 4 decimals, the value
    MMSA's trainers select on (``select = "mmsa_loss"``)."""
    r = predict(model, loader)
    metrics = compute_metrics(task, r["pred"], r["labels"], r["logits"])
    loss = r["loss"]
    if loss is None:
        if task.is_classes:
            loss = float(class_loss({"logits": torch.as_tensor(r["logits"])}, {"labels": torch.as_tensor(r["labels"])}, task))
        elif task.n_classes and r["logits"] is not None:
            target = torch.as_tensor(three_classes(r["labels"]))
            loss = float(nn.functional.cross_entropy(torch.as_tensor(r["logits"]), target))
        elif task.n_classes:
            loss = 1.0 - metrics.get("Acc_3", 0.0)
        else:
            loss = float(np.mean(np.abs(r["pred"].astype(np.float64) - r["labels"])))
    extra = {"loss_mmsa": round(_batch_mean_loss(r), 4)} if batch_loss else {}
    return {"loss": float(loss), **extra, **metrics}


def train_pass(model: MSAModel, loader: DeviceLoader, opt: torch.optim.Optimizer, stage: str, epoch: int,
                settings: TrainSettings, amp_dtype: torch.dtype | None, bar: Any,
                batches: int | None = None) -> dict[str, float]:
    """One pass (or its first ``batches`` batches): zero at each window's first batch, step after its last;
    a trailing partial window is not stepped (Self-MM/MMSA semantics). Clipping follows every backward,
    then ``after_backward``."""
    model.train()
    k = max(1, settings.update_every)
    sums: dict[str, float] = defaultdict(float)
    n = 0
    params = [p for p in model.parameters() if p.requires_grad]
    for i, batch in enumerate(loader):
        if batches is not None and i >= batches:
            break
        if i % k == 0:
            model.zero_grad(set_to_none=True)
        with _autocast(loader.device, amp_dtype):
            out = model(batch)
            lo = model.loss(out, batch, epoch, stage)
        loss = lo.loss
        if not torch.isfinite(loss.detach()):
            raise TrainingError(f"loss became {float(loss.detach())} at epoch {epoch}, stage {stage!r}, batch {i + 1}; "
                                "try a lower learning rate, gradient clipping, or train without --amp")
        loss.backward()
        if settings.clip_value is not None:
            nn.utils.clip_grad_value_(params, settings.clip_value)
        if settings.clip_norm is not None:
            nn.utils.clip_grad_norm_(params, settings.clip_norm)
        model.after_backward(out, batch, epoch)
        if (i + 1) % k == 0:
            opt.step()
        sums["loss"] += float(loss.detach())
        for key, v in lo.logs.items():
            sums[key] += float(v)
        n += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{stage} loss {sums['loss'] / n:.4f}", refresh=False)
    return {key: v / max(n, 1) for key, v in sums.items()}


def pass_batches(passes: float, n_batches: int) -> list[int]:
    """Batches per pass of a stage that runs ``passes`` passes: whole passes, then a fraction of one as its
    first ``ceil(fraction x n_batches)`` batches (MMIM's MMILB stage on MOSEI: 0.5)."""
    whole, part = int(passes), passes - int(passes)
    return [n_batches] * whole + ([math.ceil(part * n_batches)] if part > 0 else [])


def _stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def fit(model: MSAModel, train: Split, valid: Split | None, test: Split | None, task: Task, *, seed: int,
        settings: TrainSettings | None = None, device: str | torch.device | None = None, stats: NormStats | None = None,
        amp: bool = False, progress: bool = True, log: Callable[[str], None] = _stderr_log,
        on_epoch: Callable[[dict[str, Any]], bool | None] | None = None) -> FitResult:
    """Train ``model`` in place and leave it holding the weights of the selected (best validation) epoch.

    ``on_epoch(record)`` receives every epoch's record (losses, validation metrics, model logs);
    returning True stops training. ``test`` is evaluated once, after selection, with the selected weights.
    ``amp`` turns on bf16 autocast for the training steps on CUDA; validation and test always run in fp32.
    With ``select = "last"`` nothing is selected and nothing stops early: the model keeps the weights after
    ``max_epochs``, and ``valid`` may be None (then no epoch is validated).
    """
    settings = settings or model.train_settings()
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    amp_dtype = amp_dtype_for(dev, amp)
    key, higher = parse_select(settings.select)
    last = key == "last"
    if valid is None and not last:
        raise UsageError(f"selection rule {settings.select!r} needs a valid split; only 'last' trains without one")
    model.to(dev)
    t0 = time.perf_counter()
    train_loader = DeviceLoader(make_loader(train, settings.batch_size, shuffle=True, seed=seed, stats=stats), dev)
    valid_loader = (DeviceLoader(make_loader(valid, settings.batch_size, shuffle=False, stats=stats), dev)
                    if valid is not None else None)
    optimizers, notes = build_optimizers(model, settings)
    schedulers = build_schedulers(optimizers, settings.scheduler)
    interactive = progress and sys.stderr.isatty()
    epochs_bar = _bar(interactive, settings.max_epochs, f"seed {seed}", leave=True)
    if epochs_bar is not None and log is _stderr_log:
        log = lambda line: epochs_bar.write(line, file=sys.stderr)  # noqa: E731 - lines above the bars
    history: list[dict[str, Any]] = []
    best_value, best_epoch, best_state, best_valid = math.nan, 0, None, {}
    stopped = "max_epochs"
    with deterministic(dev):
        model.on_train_start(train_loader)
        for epoch in range(1, settings.max_epochs + 1):
            te = time.perf_counter()
            model.on_epoch_start(epoch)
            plan = model.stages(epoch)
            record: dict[str, Any] = {"seed": seed, "epoch": epoch}
            runs = [(stage, n) for stage, passes in plan for n in pass_batches(passes, len(train_loader))]
            bar = _bar(interactive, sum(n for _, n in runs), f"epoch {epoch}")
            for stage, n in runs:
                if stage not in optimizers:
                    raise ValueError(f"{type(model).__name__}.stages() names stage {stage!r} but no parameter group has it")
                logs = train_pass(model, train_loader, optimizers[stage], stage, epoch, settings, amp_dtype, bar, n)
                for k2, v in logs.items():
                    record[f"train_{k2}" if stage == "main" else f"{stage}/{k2}"] = v
            record.update({k2: float(v) for k2, v in (model.on_epoch_end(epoch) or {}).items()})
            val = evaluate(model, valid_loader, task, batch_loss=key == "loss_mmsa") if valid_loader is not None else {}
            if not last and key not in val:
                raise UsageError(f"selection metric {key!r} is not computed for {task.name}; available: {', '.join(val)}")
            record.update({f"val_{k2}": v for k2, v in val.items()})
            for sched in schedulers:
                if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    sched.step(val["loss"] if val else record.get("train_loss", math.nan))
                else:
                    sched.step()
            for stage, o in optimizers.items():
                record[f"lr/{stage}"] = o.param_groups[0]["lr"]
            value = float(epoch) if last else val[key]
            improved = last or not math.isnan(value) and (
                best_epoch == 0 or (value > best_value + IMPROVE_EPS if higher else value < best_value - IMPROVE_EPS))
            if improved:
                best_value, best_epoch, best_valid = value, epoch, val
                if not last:  # "last": the weights the loop ends with, no copy per epoch
                    best_state = {k2: v.detach().to("cpu", copy=True) for k2, v in model.state_dict().items()}
            record["seconds"] = time.perf_counter() - te
            record["best"] = improved
            history.append(record)
            if bar is not None:
                bar.close()
            if epochs_bar is not None:
                epochs_bar.update(1)
                if not last:
                    epochs_bar.set_postfix_str(f"val {key} {value:.4f} (best {best_value:.4f} @ {best_epoch})")
            log(_line(record, key, settings.max_epochs))
            if on_epoch is not None and on_epoch(record):
                stopped = "callback"
                break
            if not last and epoch - best_epoch >= settings.early_stop:
                stopped = "early_stop"
                break
        if epochs_bar is not None:
            epochs_bar.close()
        if not last:  # "last": the model already holds the weights the loop ended with
            if best_state is None:
                raise TrainingError(f"no epoch produced a finite validation {key}; nothing to select")
            model.load_state_dict(best_state)
        test_metrics = None
        if test is not None:
            test_loader = DeviceLoader(make_loader(test, settings.batch_size, shuffle=False, stats=stats), dev)
            test_metrics = evaluate(model, test_loader, task, batch_loss=key == "loss_mmsa")
    return FitResult(seed=seed, best_epoch=best_epoch, epochs_run=len(history), stopped=stopped, valid=best_valid,
                     test=test_metrics, history=history, seconds=time.perf_counter() - t0, notes=notes,
                     amp="bf16" if amp_dtype is not None else "off")


def _bar(enabled: bool, total: int, desc: str, leave: bool = False) -> Any:
    """A tqdm bar on an interactive stderr; None otherwise (logs then get one line per epoch)."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=leave, file=sys.stderr, dynamic_ncols=True)


def _line(r: dict[str, Any], key: str, max_epochs: int) -> str:
    """One readable line per epoch (the log when stderr is not a terminal)."""
    extra = "" if key in ("loss", "last") or f"val_{key}" not in r else f" {key} {r[f'val_{key}']:.4f}"
    val = f" | val loss {r['val_loss']:.4f}{extra}" if "val_loss" in r else ""
    return (f"seed {r['seed']} epoch {r['epoch']}/{max_epochs}: train loss {r.get('train_loss', float('nan')):.4f}"
            f"{val} | {r['seconds']:.1f}s{' *' if r['best'] and key != 'last' else ''}")

