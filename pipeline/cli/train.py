"""msa-train: train a registered model on an MMSA-schema features file, for one or more seeds."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from msa.models import MODELS

from msa.pipeline.train.data import DATASETS
from msa.core.errors import UsageError
from msa.pipeline.cli.common import run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="msa-train",
        description="Train a model on cached features (.pkl from msa-extract/MMSA, or the safe .npz export). "
                    "Selection and early stopping use the valid split only; test is scored once at the end. "
                    "Note: a .pkl file can run code when loaded; only pass files you trust, or use .npz.",
    )
    p.add_argument("--data", required=True, type=Path, help="features file (.pkl or .npz) in the MMSA schema")
    p.add_argument("--dataset", choices=list(DATASETS),
                   help="label range and metrics preset (required for regression; binary = two-class classification)")
    p.add_argument("--task", choices=("regression", "classification"),
                   help="regression (default) or classification on the file's class labels (label.csv 'class')")
    p.add_argument("--class-weights", metavar="balanced|W1,W2,...",
                   help="classification: cross-entropy class weights (balanced = inverse train frequency)")
    p.add_argument("--group-by", metavar="COLUMN",
                   help="keep each group (video_id, or a label.csv column such as speaker) in one split: splits an "
                        "unsplit file, carves valid out of train when missing, else checks the splits")
    p.add_argument("--split-ratio", nargs=3, type=float, default=[0.8, 0.1, 0.1], metavar=("TRAIN", "VALID", "TEST"),
                   help="row shares of the group split (default 0.8 0.1 0.1)")
    p.add_argument("--model", required=True, choices=MODELS.names())
    p.add_argument("--out", required=True, type=Path, help="run folder: results.csv, metrics.json, epochs.jsonl, bundle")
    p.add_argument("--seeds", nargs="+", type=int, default=[1111], help="one run per seed (default 1111)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default: the model's)")
    p.add_argument("--preset", default="default",
                   help="named config preset of the model (e.g. tiny; paper: the published run, docs/reproduction.md)")
    p.add_argument("--config", type=Path, help='JSON object of model config overrides; training settings nest '
                   'under "train" (e.g. {"lr": 5e-4, "train": {"batch_size": 8}} or "train.batch_size")')
    p.add_argument("--text-encoder", metavar="DIR",
                   help="local folder of the text encoder (e.g. bert-base-uncased for --preset paper); "
                        "sets the config's text_encoder")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--normalize", action="store_true",
                   help="standardise audio/vision features with train-split statistics (stored in the bundle)")
    p.add_argument("--amp", action="store_true",
                   help="bf16 autocast for the training steps on CUDA (validation and test always run in fp32)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--save-all-seeds", action="store_true", help="also keep one bundle per seed in seeds/<seed>/")
    p.add_argument("--overwrite", action="store_true", help="reuse an --out folder that already holds a run")
    p.add_argument("--quiet", action="store_true", help="no progress bar (epoch lines are still printed)")
    return p


def read_overrides(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise UsageError(f"--config file not found: {path}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"--config {path}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise UsageError(f"--config {path}: expected a JSON object of config keys, got {type(obj).__name__}")
    return obj


def _main(args: argparse.Namespace) -> int:
    from msa.pipeline.train.experiment import RunSpec, train_run

    if args.epochs is not None and args.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    overrides = read_overrides(args.config)
    if args.text_encoder:
        overrides["text_encoder"] = args.text_encoder
    task = args.task or ("classification" if args.dataset == "binary" else "regression")
    if args.dataset is None and task == "regression":
        raise UsageError("--dataset is required for regression (or pass --task classification)")
    spec = RunSpec(data=args.data, dataset=args.dataset or "custom", model=args.model, task=task,
                   class_weights=args.class_weights, group_by=args.group_by, split_ratio=tuple(args.split_ratio),
                   out=args.out, seeds=tuple(args.seeds), epochs=args.epochs, preset=args.preset, overrides=overrides,
                   device=args.device, normalize=args.normalize, amp=args.amp, progress=not args.quiet,
                   save_all_seeds=args.save_all_seeds, overwrite=args.overwrite)
    rows = train_run(spec)
    for r in rows:
        metrics = "  ".join(f"{k[5:]} {v:.4f}" for k, v in r.items() if k.startswith("test_") and isinstance(v, float))
        print(f"seed {r['seed']}: best epoch {r['best_epoch']}  test: {metrics or 'no test split'}")
    print(f"results: {args.out / 'results.csv'}  bundle: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run("msa-train", build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
