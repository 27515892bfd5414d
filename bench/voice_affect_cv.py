"""Actor-grouped cross-validation of voice-affect recipes on RAVDESS actors 1-20 (issue 13); never the test actors.

Actors 1-20 (msa-extract's train and valid splits of the ``checkpoints/ravdess.py`` tree) are dealt into
five folds of four consecutive actors (two male, two female each). Each fold trains ``pooled_mlp`` with
msa-train's trainer (``select = "last"``: a fixed epoch count, no selection on the held-out fold) on the
other sixteen actors, with their augmented copies with ``--train-aug``, and scores the four held-out
actors' original clips after every epoch. Printed per recipe: the mean over folds of the held-out 8-class
UAR at a few epoch counts, and at the last epoch the pooled held-out 8-class, 4-class (neutral / happy /
sad / angry) and binary valence (happy vs sad + angry) UAR, the figures of ``bench/voice_affect.py``;
when the file has augmented copies (ids with ``_aug``) also the 8-class UAR on the held-out actors'
copies (unseen actors in unseen recording conditions). ``--view`` picks the input: ``all`` (whisper_enc mean+std), ``std`` (the std half
only: what subtracting each clip's own mean per dimension before pooling leaves), ``mean``; ``--egemaps``
appends eGeMAPS functionals (matched by clip).

    python bench/voice_affect_cv.py --feats feats/features.pkl [--train-aug] \
        --config '{"layers": 0, "dropout": 0.5, "lr": 3e-4, "weight_decay": 2.0}' --epochs 150
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from voice_affect import scores, uar  # noqa: E402 - the figures' definitions (bench/voice_affect.py)

FOLDS = tuple(tuple(range(a, a + 4)) for a in range(1, 21, 4))
REPORT_EPOCHS = (25, 50, 75, 100, 150, 200, 300)


def load_all(path: Path, egemaps: Path | None, view: str) -> dict[str, np.ndarray]:
    """x (N, D), class index y, actor, clip id of every row of a features file (all splits), test actors dropped."""
    from msa.pipeline.train.data import load_features

    def rows(p: Path) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
        fs = load_features(p)
        cols: dict[str, list[np.ndarray]] = {"x": [], "y": [], "actor": [], "id": []}
        for s in fs.splits.values():
            cols["x"].append(s.audio[:, 0, :])
            cols["y"].append(np.asarray(s.classes))
            cols["actor"].append(np.asarray(s.columns["actor"]).astype(int))
            cols["id"].append(np.array([str(i).split("$_$")[-1] for i in s.ids]))
        return {k: np.concatenate(v) for k, v in cols.items()}, tuple(fs.class_names)

    d, names = rows(path)
    half = d["x"].shape[1] // 2
    d["x"] = {"all": d["x"], "std": d["x"][:, half:], "mean": d["x"][:, :half]}[view]
    if egemaps is not None:
        e, _ = rows(egemaps)
        where = {c: i for i, c in enumerate(e["id"])}
        missing = sorted(set(d["id"]) - set(where))
        if missing:
            raise SystemExit(f"{egemaps} lacks {len(missing)} clips of {path} (e.g. {missing[0]})")
        d["x"] = np.concatenate([d["x"], e["x"][[where[c] for c in d["id"]]]], axis=1)
    d["names"] = np.array(names)
    keep = d["actor"] <= 20
    return {k: (v[keep] if k != "names" else v) for k, v in d.items()}


def split(name: str, x: np.ndarray, y: np.ndarray) -> "Split":  # noqa: F821 - msa type, imported lazily
    from msa.pipeline.train.data import Split

    n = len(y)
    return Split(name=name, labels=y.astype(np.float32), audio=x[:, None, :].astype(np.float32),
                 audio_lengths=np.ones(n, np.int64), vision=np.zeros((n, 1, 0), np.float32),
                 vision_lengths=np.ones(n, np.int64), text=np.zeros((n, 1, 0), np.float32),
                 classes=y.astype(np.int64))


def probs_of(model: object, s: "Split", stats: dict) -> np.ndarray:  # noqa: F821
    import torch

    from msa.pipeline.train.loader import make_loader

    model.eval()  # type: ignore[attr-defined]
    out = []
    with torch.inference_mode():
        for batch in make_loader(s, 256, shuffle=False, stats=stats):
            out.append(model(batch)["probs"].float().numpy())  # type: ignore[operator]
    return np.concatenate(out)


def cv(d: dict[str, np.ndarray], aug: dict[str, np.ndarray] | None, overrides: dict, epochs: int, seed: int,
       class_weights: str | None, train_aug: bool = True) -> dict[str, object]:
    """Held-out figures of one recipe over the five actor folds."""
    from msa.models import MODELS, build_config
    from msa.pipeline.train.classes import class_task
    from msa.pipeline.train.data import FeatureSet
    from msa.pipeline.train.loader import norm_stats
    from msa.pipeline.train.trainer import fit, seed_everything

    names = tuple(d["names"].tolist())
    config = build_config("pooled_mlp", "custom", "default", {**overrides, "train": {
        **overrides.get("train", {}), "select": "last", "max_epochs": epochs}})
    curves, probs, y_all, aug_hits = [], np.zeros((len(d["y"]), len(names))), d["y"], []
    for fold in FOLDS:
        held = np.isin(d["actor"], fold)
        xt, yt = d["x"][~held], d["y"][~held]
        if aug is not None and train_aug:
            a_tr = ~np.isin(aug["actor"], fold)
            xt, yt = np.concatenate([xt, aug["x"][a_tr]]), np.concatenate([yt, aug["y"][a_tr]])
        train, valid = split("train", xt, yt), split("valid", d["x"][held], d["y"][held])
        fs = FeatureSet(splits={"train": train, "valid": valid}, class_names=names)
        task = class_task("custom", fs, class_weights)
        stats = norm_stats(train)
        seed_everything(seed)
        model = MODELS.get("pooled_mlp")(config, fs.dims(), task)
        result = fit(model, train, valid, None, task, seed=seed, settings=model.train_settings(), device="cpu",
                     stats=stats, progress=False, log=lambda line: None)
        curves.append([r["val_UAR"] for r in result.history])
        probs[held] = probs_of(model, valid, stats)
        if aug is not None:
            a_held = np.isin(aug["actor"], fold)
            p = probs_of(model, split("aug", aug["x"][a_held], aug["y"][a_held]), stats)
            aug_hits.append((aug["y"][a_held], p.argmax(1)))
    c = np.asarray(curves)
    named = d["names"][y_all]
    u8, u4, ub = scores(named, probs, names)
    out: dict[str, object] = {"fold_uar_by_epoch": {e: round(float(c[:, e - 1].mean()), 4) for e in REPORT_EPOCHS
                                                     if e <= epochs},
                              "best_epoch_of_mean": int(c.mean(0).argmax()) + 1,
                              "best_mean": round(float(c.mean(0).max()), 4),
                              "pooled_last": {"uar8": round(u8, 4), "uar4": round(u4, 4), "valence": round(ub, 4)},
                              "fold_uar_last": [round(float(v), 4) for v in c[:, -1]]}
    if aug_hits:
        yy = np.concatenate([h[0] for h in aug_hits])
        pp = np.concatenate([h[1] for h in aug_hits])
        out["aug_heldout_uar8"] = round(uar(d["names"][yy], d["names"][pp]), 4)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--feats", type=Path, required=True, help="whisper_enc features of the RAVDESS tree")
    p.add_argument("--aug", type=Path, help="whisper_enc features of augmented copies in another file (by default the "
                   "rows of --feats whose clip id has '_aug', as the tree of bench/voice_affect_augment.py gives)")
    p.add_argument("--train-aug", action="store_true", help="train on the copies of the training actors too "
                   "(without: copies only score the held-out actors)")
    p.add_argument("--egemaps", type=Path, help="egemaps_func features of the same tree (appended per clip)")
    p.add_argument("--view", choices=("all", "std", "mean"), default="all")
    p.add_argument("--config", action="append", required=True, help="pooled_mlp overrides (JSON); repeatable")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--class-weights", default="balanced")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    d = load_all(args.feats, args.egemaps, args.view)
    copy = np.char.find(d["id"].astype(str), "_aug") >= 0  # augmented copies (bench/voice_affect_augment.py)
    aug = {k: v[copy] for k, v in d.items() if k != "names"} if copy.any() else None
    d = {k: (v[~copy] if k != "names" else v) for k, v in d.items()}
    if args.aug:
        aug = load_all(args.aug, args.egemaps, args.view)
    for text in args.config:
        res = cv(d, aug, json.loads(text), args.epochs, args.seed, args.class_weights or None, args.train_aug)
        print(json.dumps({"config": json.loads(text), "view": args.view, "train_aug": args.train_aug and aug is not None,
                          "egemaps": bool(args.egemaps), "epochs": args.epochs, **res}), flush=True)


if __name__ == "__main__":
    main()
