"""Training cost per model on a MOSI-sized generated file: seconds per epoch and peak memory.

MOSI shape (MMSA's published unaligned features): 1284/229/686 samples, text 50 x 768, audio 500 x 5,
vision 375 x 20; each model at its default (MMSA / paper) config, BERT-using models with the embedded
MiniLM fine-tuned. Each model runs in its own process (clean peak RSS). After a one-batch first
epoch (so per-epoch state such as MI memories exists), the first ``--batches`` training batches of
each stage of epoch 2 are timed after one warm-up batch and extrapolated to
the full epoch (``--full`` times the whole epoch); validation is timed the same way. Wall time
depends on what else runs on the machine; CPU time (process user + system) much less so.

    python bench/train.py [--models tfn lmf] [--batches 10] [--threads 2] [--device auto] [--full]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MMSA = {"tfn": "5 s", "lmf": "0.9 s", "self_mm": "40 s (4.7 GB)", "mult": "~16 min (>10 GB)"}


class _Take:
    """The first ``n`` batches of a loader (``len`` says how many)."""

    def __init__(self, loader, n: int | None) -> None:
        self.loader, self.n, self.device = loader, n, loader.device

    def __len__(self) -> int:
        return len(self.loader) if self.n is None else min(self.n, len(self.loader))

    def __iter__(self):
        return itertools.islice(iter(self.loader), len(self))


def worker(model_name: str, data: str, batches: int | None, device: str) -> dict:
    import torch

    from msa.models import MODELS, build_config
    from msa.pipeline.train.data import load_features
    from msa.pipeline.train.loader import DeviceLoader, make_loader
    from msa.pipeline.train.experiment import task_for
    from msa.pipeline.train.trainer import train_pass, build_optimizers, predict, resolve_device, seed_everything

    dev = resolve_device(device)
    fs = load_features(data)
    config = build_config(model_name, "mosi")
    task = task_for("mosi", fs, config)
    seed_everything(1)
    t0 = time.perf_counter()
    model = MODELS.get(model_name)(config, fs.dims(), task).to(dev)
    build_s = time.perf_counter() - t0
    settings = model.train_settings()
    train = DeviceLoader(make_loader(fs.split("train"), settings.batch_size, shuffle=True, seed=1), dev)
    valid = DeviceLoader(make_loader(fs.split("valid"), settings.batch_size, shuffle=False), dev)
    optimizers, _ = build_optimizers(model, settings)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.on_train_start(train)
    model.on_epoch_start(1)  # a one-batch first epoch, so per-epoch state (MI memories, u-labels) exists
    for stage, _ in model.stages(1):
        train_pass(model, _Take(train, 1), optimizers[stage], stage, 1, settings, None, None)
    model.on_epoch_end(1)
    epoch = 2  # the timed, steady-state epoch
    model.on_epoch_start(epoch)
    train_s = train_cpu = 0.0
    for stage, passes in model.stages(epoch):
        warm = _Take(train, 1)
        train_pass(model, warm, optimizers[stage], stage, epoch, settings, None, None)
        part = _Take(train, batches)
        t, c = time.perf_counter(), time.process_time()
        train_pass(model, part, optimizers[stage], stage, epoch, settings, None, None)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        scale = len(train) * passes / len(part)
        train_s += (time.perf_counter() - t) * scale
        train_cpu += (time.process_time() - c) * scale
    part = _Take(valid, batches)
    t, c = time.perf_counter(), time.process_time()
    predict(model, part)
    valid_s = (time.perf_counter() - t) / len(part) * len(valid)
    valid_cpu = (time.process_time() - c) / len(part) * len(valid)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "model": model_name, "batch_size": settings.batch_size, "train_batches": len(train),
        "timed_batches": len(_Take(train, batches)), "train_s": train_s, "valid_s": valid_s,
        "epoch_s": train_s + valid_s, "epoch_cpu_s": train_cpu + valid_cpu, "build_s": build_s, "trainable_params": n_params,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "peak_cuda_gb": torch.cuda.max_memory_allocated() / 1024**3 if dev.type == "cuda" else None,
        "device": str(dev), "threads": torch.get_num_threads(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", help="default: every registered model")
    p.add_argument("--batches", type=int, default=10, help="timed batches per stage (after 1 warm-up)")
    p.add_argument("--full", action="store_true", help="time whole epochs instead of extrapolating")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per model")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    a = p.parse_args()
    batches = None if a.full else a.batches
    if a.worker:
        import torch

        torch.set_num_threads(a.threads)
        print(json.dumps(worker(a.worker, a.data, batches, a.device)))
        return 0

    from msa.models import MODELS
    from msa.pipeline.train.data import save_npz
    from msa.pipeline.train.synth import make_mmsa, mosi_sized

    names = a.models or MODELS.names()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "mosi_sized.npz"
        save_npz(make_mmsa(mosi_sized(), seed=0), data)
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
              f"{os.getloadavg()[0]:.1f}, threads {a.threads}, "
              f"{'full epochs' if a.full else f'{a.batches} timed batches per stage, extrapolated'}", flush=True)
        print("| model | batch | wall s/epoch (train + valid) | train | valid | CPU s/epoch | peak RSS GB | peak CUDA GB "
              "| trainable params | MMSA (2 cores) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name in names:
            cmd = [sys.executable, __file__, "--worker", name, "--data", str(data), "--threads", str(a.threads),
                   "--device", a.device] + (["--full"] if a.full else ["--batches", str(a.batches)])
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, check=False)
            except subprocess.TimeoutExpired:
                print(f"| {name} | | timed out after {a.timeout} s | | | | | | | {MMSA.get(name, '')} |", flush=True)
                continue
            if r.returncode != 0:
                err = (r.stderr.strip().splitlines() or ["?"])[-1]
                print(f"| {name} | | failed: {err[:120]} | | | | | | | {MMSA.get(name, '')} |", flush=True)
                continue
            x = json.loads(r.stdout.strip().splitlines()[-1])
            cuda = f"{x['peak_cuda_gb']:.2f}" if x["peak_cuda_gb"] is not None else "-"
            print(f"| {name} | {x['batch_size']} | {x['epoch_s']:.1f} | {x['train_s']:.1f} | {x['valid_s']:.1f} | "
                  f"{x['epoch_cpu_s']:.1f} | "
                  f"{x['peak_rss_gb']:.2f} | {cuda} | {x['trainable_params']:,} | {MMSA.get(name, '')} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
