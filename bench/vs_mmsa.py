"""Training speed side by side with MMSA itself: same machine, same torch, same MOSI-sized batches.

MMSA is not a dependency of msa; install it next to msa for this script only (it needs no weights):

    .venv/bin/pip install --no-deps MMSA==2.2.1 easydict nvidia-ml-py
    .venv/bin/python bench/vs_mmsa.py [--models tfn lmf self_mm mult] [--batches 8] [--threads 2]

For each model, in its own process: MMSA's model (``MMSA.models.AMIO``) built from MMSA's own MOSI
config, stepped the way MMSA's trainer steps it (its optimiser groups, L1 losses, gradient accumulation
``update_epochs`` and MulT's value clipping; TFN/LMF inputs averaged over time once, as MMSA's loader
does with ``need_normalized``; Self-MM's BERT pointed at the embedded MiniLM), and msa's model through
msa's trainer (``bench/train.py``'s worker). Both time ``--batches`` training batches after a warm-up
batch and extrapolate to one epoch over the 1284 training samples. MMSA's Self-MM trainer also updates
its unimodal labels every batch, which is not reproduced here (msa's ULGM update is timed), so the
MMSA Self-MM figure is a lower bound.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ("tfn", "lmf", "self_mm", "mult")


def mmsa_worker(name: str, data: str, batches: int) -> dict:
    import numpy as np
    import torch
    from easydict import EasyDict

    import MMSA
    from MMSA.models.AMIO import AMIO
    from msa.models.layers.text import minilm_path
    from msa.pipeline.train.data import load_features

    cfg = json.loads((Path(MMSA.__file__).parent / "config" / "config_regression.json").read_text())[name]
    args = EasyDict({**cfg["commonParams"], **cfg["datasetParams"]["mosi"]})
    args.update(model_name=name, dataset_name="mosi", feature_dims=[768, 5, 20], seq_lens=[50, 500, 375],
                train_mode="regression", num_classes=1, output_dim=1, device=torch.device("cpu"),
                need_model_aligned=False, need_data_aligned=False, transformers="bert", pretrained=minilm_path())
    if name == "self_mm":  # MMSA's config assumes bert-base (768); MiniLM's [CLS] is 384-d
        args.text_out = json.loads((Path(minilm_path()) / "config.json").read_text())["hidden_size"]
    torch.manual_seed(1)
    model = AMIO(args)
    model.train()
    split = load_features(data).split("train")
    arrays = {k: torch.as_tensor(np.asarray(getattr(split, k))) for k in
              ("text", "text_bert", "audio", "vision", "audio_lengths", "vision_lengths", "labels")}
    if args.get("need_normalized"):  # MMSA's loader averages audio and vision over time once
        arrays["audio"], arrays["vision"] = arrays["audio"].mean(1, keepdim=True), arrays["vision"].mean(1, keepdim=True)
    b = args.batch_size
    l1 = torch.nn.L1Loss()
    params = list(model.parameters())
    if name == "lmf":
        opt = torch.optim.Adam([{"params": params[:3], "lr": args.factor_lr},
                                {"params": params[5:], "lr": args.learning_rate}], weight_decay=args.weight_decay)
    elif name == "self_mm":
        bert = {id(p) for p in model.Model.text_model.parameters()}
        opt = torch.optim.Adam([{"params": [p for p in params if id(p) in bert], "lr": args.learning_rate_bert},
                                {"params": [p for p in params if id(p) not in bert], "lr": args.learning_rate_other}])
    else:
        opt = torch.optim.Adam(params, lr=args.learning_rate)
    every = args.get("update_epochs", 1) if name in ("self_mm", "mult") else 1

    def step(i: int) -> None:
        rows = slice(i * b, (i + 1) * b)
        y = arrays["labels"][rows].float().view(-1, 1)
        if i % every == 0:
            opt.zero_grad()
        if name == "self_mm":
            out = model(arrays["text_bert"][rows].float(), (arrays["audio"][rows], arrays["audio_lengths"][rows]),
                        (arrays["vision"][rows], arrays["vision_lengths"][rows]))
            loss = sum(l1(out[m], y) for m in "MTAV")
        else:
            out = model(arrays["text"][rows], arrays["audio"][rows], arrays["vision"][rows])
            loss = l1(out["M"], y)
        loss.backward()
        if name == "mult":
            torch.nn.utils.clip_grad_value_(params, args.grad_clip)
        if (i + 1) % every == 0:
            opt.step()

    step(0)
    t = time.perf_counter()
    for i in range(1, batches + 1):
        step(i)
    per_batch = (time.perf_counter() - t) / batches
    return {"model": name, "batch_size": b, "train_s": per_batch * math.ceil(len(arrays["text"]) / b)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--side", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        import torch

        torch.set_num_threads(a.threads)
        if a.side == "mmsa":
            result = mmsa_worker(a.worker, a.data, a.batches)
        else:
            spec = importlib.util.spec_from_file_location("bench_train", HERE / "train.py")
            bench_train = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(bench_train)
            result = bench_train.worker(a.worker, a.data, a.batches, "cpu")
        print(json.dumps(result))
        return 0
    if importlib.util.find_spec("MMSA") is None:
        sys.exit("vs_mmsa: MMSA is not installed; pip install --no-deps MMSA==2.2.1 easydict nvidia-ml-py")

    from msa.pipeline.train.data import save_npz
    from msa.pipeline.train.synth import make_mmsa, mosi_sized

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "mosi_sized.npz"
        save_npz(make_mmsa(mosi_sized(), seed=0), data)
        print(f"# {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, torch threads {a.threads}, "
              f"{a.batches} timed training batches per model and side, extrapolated to one epoch (1284 samples)")
        print("| model | batch | MMSA s/epoch | msa s/epoch | MMSA / msa |")
        print("|---|---:|---:|---:|---:|")
        for name in a.models:
            out = {}
            for side in ("mmsa", "msa"):
                cmd = [sys.executable, __file__, "--worker", name, "--side", side, "--data", str(data),
                       "--batches", str(a.batches), "--threads", str(a.threads)]
                r = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if r.returncode != 0:
                    sys.exit(f"vs_mmsa: {side} {name} failed:\n{r.stderr[-2000:]}")
                out[side] = json.loads(r.stdout.strip().splitlines()[-1])
            m, s = out["mmsa"]["train_s"], out["msa"]["train_s"]
            print(f"| {name} | {out['msa']['batch_size']} | {m:.1f} | {s:.1f} | {m / s:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
