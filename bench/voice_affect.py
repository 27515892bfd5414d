"""Per-actor test figures of a voice-affect bundle on RAVDESS, and of the eGeMAPS-functionals baseline.

``--feats`` is the msa-extract features file of the RAVDESS tree (``checkpoints/ravdess.py``) with the
bundle's ``whisper_enc`` features; ``--egemaps`` (optional) the same tree with ``egemaps_func``. For
each test actor and overall: 8-class UAR (argmax of all classes), 4-class UAR (neutral / happy / sad /
angry clips, argmax over those four probabilities) and binary valence UAR (happy vs sad + angry,
happy's probability against the sum of sad's and angry's). The baseline is the issue's reference
recipe: standardised functionals, logistic regression, C chosen by 5-fold cross-validation grouped
by actor on the training actors (train + valid splits), then fitted on all of them.

    python bench/voice_affect.py --bundle checkpoints/voice_affect --feats feats/features.pkl \
        [--egemaps eg/features.pkl]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

FOUR = ("neutral", "happy", "sad", "angry")


def uar(y: np.ndarray, p: np.ndarray) -> float:
    """Unweighted average recall over the classes present in ``y`` (msa-train's UAR on names)."""
    from msa.pipeline.train.class_metrics import confusion_matrix, uar as uar_of

    names = {c: i for i, c in enumerate(np.unique(np.concatenate([y, p])))}
    return uar_of(confusion_matrix([names[c] for c in y], [names[c] for c in p], len(names)))


def load(path: Path) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """Features (N, D), class names per clip, actor and split, all splits stacked."""
    from msa.pipeline.train.data import load_features

    fs = load_features(path)
    names = fs.class_names
    cols: dict[str, list[np.ndarray]] = {"x": [], "y": [], "actor": [], "split": []}
    for name, s in fs.splits.items():
        cols["x"].append(s.audio[:, 0, :])
        cols["y"].append(np.array([names[i] for i in s.classes]))
        cols["actor"].append(np.asarray(s.columns["actor"]).astype(int))
        cols["split"].append(np.full(len(s.classes), name))
    return {k: np.concatenate(v) for k, v in cols.items()}, tuple(names)


def scores(y: np.ndarray, probs: np.ndarray, classes: tuple[str, ...]) -> tuple[float, float, float]:
    idx = {c: i for i, c in enumerate(classes)}
    u8 = uar(y, np.array(classes)[probs.argmax(1)])
    m4 = np.isin(y, FOUR)
    p4 = np.array(FOUR)[probs[m4][:, [idx[c] for c in FOUR]].argmax(1)]
    mb = np.isin(y, ("happy", "sad", "angry"))
    pos = probs[mb, idx["happy"]] > probs[mb, idx["sad"]] + probs[mb, idx["angry"]]
    return u8, uar(y[m4], p4), uar(y[mb] == "happy", pos)


def table(label: str, d: dict[str, np.ndarray], probs: np.ndarray, classes: tuple[str, ...]) -> None:
    test = d["split"] == "test"
    for actor in sorted(set(d["actor"][test])):
        m = d["actor"][test] == actor
        u8, u4, ub = scores(d["y"][test][m], probs[m], classes)
        print(f"| {label} | {actor} | {u8:.3f} | {u4:.3f} | {ub:.3f} |")
    u8, u4, ub = scores(d["y"][test], probs, classes)
    print(f"| {label} | **21-24** | **{u8:.3f}** | **{u4:.3f}** | **{ub:.3f}** |", flush=True)


def bundle_probs(bundle: Path, x: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    from msa.pipeline.serve.affect import pooled_probs
    from msa.pipeline.train.bundle import load_bundle

    b = load_bundle(bundle)
    return pooled_probs(b, x), tuple(b.task.classes)


def baseline(d: dict[str, np.ndarray]) -> tuple[np.ndarray, tuple[str, ...], float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train = d["split"] != "test"
    actors = np.unique(d["actor"][train])
    folds = [actors[i::5] for i in range(5)]

    def fit(c: float, m: np.ndarray):  # noqa: ANN202
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(d["x"][m], d["y"][m])

    cv = {}
    for c in (0.01, 0.1, 1.0):
        pred = np.empty(train.sum(), dtype=object)
        for f in folds:
            held = np.isin(d["actor"][train], f)
            pred[held] = fit(c, train & ~np.isin(d["actor"], f)).predict(d["x"][train][held])
        cv[c] = uar(d["y"][train], pred.astype(str))
    best = max(cv, key=cv.get)  # type: ignore[arg-type]
    model = fit(best, train)
    return model.predict_proba(d["x"][~train]), tuple(model.classes_), best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--feats", type=Path, required=True)
    p.add_argument("--egemaps", type=Path, default=None)
    args = p.parse_args()
    print("| model | test actor | 8-class UAR | 4-class UAR | binary valence UAR |\n|---|---|---:|---:|---:|")
    d, _ = load(args.feats)
    probs, classes = bundle_probs(args.bundle, d["x"][d["split"] == "test"])
    table("voice_affect bundle", d, probs, classes)
    if args.egemaps is not None:
        e, _ = load(args.egemaps)
        probs, classes, c = baseline(e)
        table(f"eGeMAPS functionals + logistic regression (C={c:g})", e, probs, classes)


if __name__ == "__main__":
    main()
