"""msa-eval: score a labelled set with a trained bundle, using the same metrics as msa-train."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from msa.pipeline.cli.common import run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="msa-eval",
        description="Evaluate a bundle on a features file split (.pkl/.npz) or a label.csv. "
                    "Note: a .pkl file can run code when loaded; only pass files you trust, or use .npz.",
    )
    p.add_argument("--bundle", required=True, type=Path, help="bundle folder (bundle.json + weights.safetensors)")
    p.add_argument("--data", required=True, type=Path, help="features .pkl/.npz, or label.csv")
    p.add_argument("--split", default="test", help="split to score (default test; dev = valid)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _main(args: argparse.Namespace) -> int:
    from msa.pipeline.train.bundle import load_bundle
    from msa.pipeline.train.data import load_features
    from msa.pipeline.serve.label_eval import label_csv_features
    from msa.pipeline.train.experiment import _clean, evaluate_bundle
    from msa.pipeline.train.trainer import resolve_device

    device = resolve_device(args.device)
    bundle = load_bundle(args.bundle, device=str(device))
    if args.data.suffix.lower() == ".csv":
        fs = label_csv_features(bundle, args.data, split=args.split)
    else:
        fs = load_features(args.data)
    res = evaluate_bundle(bundle, fs, args.split, device=str(device))
    if args.json:
        print(json.dumps(_clean(res)))
        return 0
    print(f"{res['bundle']} on {res['data']} [{res['split']}, n={res['n']}, {res['task']}]")
    for k, v in res["metrics"].items():
        if isinstance(v, list):
            print(confusion_text(v, res["classes"]))
        else:
            print(f"  {k:<15} {v:.4f}")
    return 0


def confusion_text(matrix: list[list[int]], classes: list[str]) -> str:
    """The confusion matrix as an aligned table: rows true class, columns predicted class."""
    w = max(len(c) for c in [*classes, "true \\ pred"]) + 1
    cw = max(max(len(c) for c in classes), *(len(str(x)) for row in matrix for x in row)) + 1
    lines = ["  confusion (rows: true class, columns: predicted)",
             "  " + "true \\ pred".ljust(w) + "".join(c.rjust(cw) for c in classes)]
    lines += ["  " + name.ljust(w) + "".join(str(x).rjust(cw) for x in row) for name, row in zip(classes, matrix)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run("msa-eval", build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
