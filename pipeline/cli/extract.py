"""msa-extract: raw clips -> cached per-clip features -> one MMSA-schema features file.

    msa-extract INPUT --out feats/ [--recipe default | --dataset sims] [--text-encoder DIR]
                [--extractors text:minilm,audio:egemaps,visual:none]
                [--set visual.fps=5] [--jobs N] [--backend fork|loky|dask] [--scheduler ADDR]
                [--max-len 50 | --max-len text=50,audio=400,vision=300] [--format pkl|npz]
                [--limit-seconds S] [--missing error|empty] [--align]

INPUT is a folder of clips (searched recursively), one media file, or an MMSA dataset folder
(label.csv + Raw/<video_id>/<clip_id>.<ext>). Rerunning the same command resumes: what is cached
is not extracted again. ``--dataset sims``/``simsv2`` picks the ``sims`` recipe (Chinese-capable
multilingual e5 text, offline); ``--text-encoder DIR`` extracts text with a local Hugging Face encoder
(bert-base-chinese for SIMS) and stamps its vocabulary on the ids.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from msa.core.errors import ExtractionError, UsageError
from msa.core.heap import keep_heap
from msa.core.modalities import EXTRACT, extract_name
from msa.pipeline.extract.sources import LabelCsvError, discover
from msa.pipeline.cli import common
from msa.pipeline.cli.extract_report import Progress, summary_table

PROG = "msa-extract"


def build_parser() -> argparse.ArgumentParser:
    from msa.extractors import DATASET_RECIPES, RECIPES
    from msa.pipeline.extract.runner import BACKENDS, DEFAULT_BACKEND

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Rerun the same command to resume: what is cached is not extracted again. "
                                       "More: docs/extract.md")
    p.add_argument("input", help="folder of clips, one media file, or a dataset folder with label.csv + Raw/")
    p.add_argument("--out", required=True, help="output folder (features file, errors.jsonl, cache/)")
    p.add_argument("--recipe", default=None, choices=sorted(RECIPES),
                   help="named extractor set (default: the dataset's, else 'default')")
    by_dataset = ", ".join(f"{d}: {r}" for d, r in DATASET_RECIPES.items())
    p.add_argument("--dataset", default=None, metavar="NAME",
                   help=f"the data's dataset (as msa-train's); sets the default recipe ({by_dataset})")
    p.add_argument("--text-encoder", default=None, metavar="DIR",
                   help="text through a local Hugging Face encoder folder (e.g. bert-base-chinese): text:hf with "
                        "model=DIR; its ids carry the encoder's vocabulary stamp")
    p.add_argument("--extractors", action="append", default=[], metavar="MOD:NAME,...",
                   help="override the recipe per modality (asr/text/audio/visual); NAME 'none' disables one")
    p.add_argument("--set", action="append", default=[], metavar="MOD.KEY=VALUE", dest="settings",
                   help="extractor config override, e.g. visual.fps=5 (repeatable; JSON values)")
    p.add_argument("--jobs", type=int, default=1, help="clips in parallel (default 1)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                   help=f"parallel engine for --jobs: fork (warm workers forked from this process), loky (fresh "
                        f"interpreters) or dask (default {DEFAULT_BACKEND})")
    p.add_argument("--scheduler", default=None, metavar="ADDR", help="dask scheduler address (default: a local cluster)")
    p.add_argument("--max-len", default="", metavar="N|MOD=N,...", help="pad/truncate lengths (default: longest)")
    p.add_argument("--align", action="store_true",
                   help="word-level alignment: audio/vision averaged per text token (needs ASR word timings)")
    p.add_argument("--format", default="pkl", choices=("pkl", "npz"), help="features file format")
    p.add_argument("--limit-seconds", type=float, default=None, help="clips longer than this fail as too_long")
    p.add_argument("--missing", default="error", choices=("error", "empty"),
                   help="a clip without the audio/video stream an extractor needs: fail it, or keep it empty")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: list[str] | None = None) -> int:
    # OpenMP worker threads (torch) sleep between parallel regions instead of spinning: extraction runs
    # many small forward passes (one short transcript each), where spinning cost MiniLM 16x the CPU
    # seconds for the same wall time on the shared 2-core machine. Set before torch loads; workers inherit it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    keep_heap()
    _one_blas_thread()
    return common.run(PROG, build_parser(), _main, argv)


def _one_blas_thread() -> None:
    """numpy's BLAS on one thread (unless OPENBLAS_NUM_THREADS says otherwise). Extraction's BLAS work is
    small (MiniLM on short windows, the face geometry's 3x3 SVDs) and an idle second BLAS thread spins
    after every call while a core is free: 1.7 of 16.4 CPU-s for the 12 clips of bench/vs_fet.py.
    Workers forked later inherit the limit; fresh interpreters (loky, dask) read the variable."""
    n = os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        from threadpoolctl import threadpool_limits  # numpy is loaded already: set its pool's size directly
    except ImportError:
        return
    if n.isdigit() and int(n) > 0:
        threadpool_limits(int(n), user_api="blas")


def _main(args: argparse.Namespace) -> int:
    from msa.pipeline.extract.runner import Plan, StorageError, run_all

    if hasattr(signal, "SIGXFSZ"):  # a file-size limit gives EFBIG (a clear error), not a silent kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.scheduler and args.backend != "dask":
        raise UsageError("--scheduler needs --backend dask")
    out = Path(args.out)
    max_len = parse_max_len(args.max_len)
    try:
        source = discover(args.input)  # every label.csv problem is reported before anything else runs
    except LabelCsvError as e:
        _write_report(out, e)
        raise
    _check_writable(out, StorageError)
    recipe, overrides, settings = choose_recipe(args.recipe, args.dataset, args.text_encoder, args.extractors,
                                                args.settings)
    refs, specs = resolve_extractors(recipe, overrides, settings, out / "cache" / "specs")
    plan = Plan(
        out_dir=str(out),
        extractors=tuple(r for m, r in refs.items() if m != "asr"),
        specs=specs,
        asr=refs.get("asr"),
        limit_seconds=args.limit_seconds,
        missing=args.missing,
        align=args.align,
        torch_threads=max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0,
        overlap=2 * args.jobs <= (os.cpu_count() or 1),  # a core per job to spare: visual beside the transcript
        stop_file=str(out / "cache" / f".stop-{os.getpid()}"),
        main_pid=os.getpid(),
    )
    from msa.pipeline.extract.cache import FeatureCache

    FeatureCache(out).sweep_temp()
    errors_path = out / "errors.jsonl"
    _atomic_text(errors_path, "")
    progress = Progress(len(source.items), enabled=not args.quiet)
    t0 = time.perf_counter()

    def on_record(rec: Any) -> None:
        if rec.error is not None:
            with open(errors_path, "a", encoding="utf-8") as f:  # one line per failure, as it happens
                f.write(json.dumps(rec.error, ensure_ascii=False) + "\n")
        progress.update(rec)

    try:
        records, interrupted = run_all(list(source.items), plan, jobs=args.jobs, backend=args.backend,
                                       scheduler=args.scheduler, on_record=on_record)
    except KeyboardInterrupt:
        progress.close()
        print(f"{PROG}: stopped; finished clips are cached. Rerun the same command to resume.", file=sys.stderr)
        return 130
    progress.close()
    failures = [r.error for r in records if r.error is not None]
    _atomic_text(errors_path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in failures))
    wall = time.perf_counter() - t0
    if interrupted:
        print(summary_table(records, wall, len(source.items)))
        print(f"{PROG}: interrupted after {len(records)} of {len(source.items)} clips; finished clips are cached. "
              "Rerun the same command to resume.", file=sys.stderr)
        return 130
    entries = [r.entry for r in records if r.entry is not None]
    if source.kind == "file" and failures:
        e = failures[0]
        msg = e["message"] if e["path"] in e["message"] else f"{e['path']}: {e['message']}"
        raise ExtractionError(f"{msg} [{e['reason']} at {e['stage']}]", reason=e["reason"])
    if not entries:
        raise ExtractionError(f"no clip could be extracted ({len(failures)} failed); see {errors_path}")
    t1 = time.perf_counter()
    try:
        features_path = _assemble(entries, specs, records, source, plan, max_len, out, args.format)
    except OSError as e:
        raise StorageError(f"cannot write the features file in {out}: {e.strerror or e}; every clip is cached, "
                           "fix the output folder and rerun to assemble it") from e
    assemble_s = time.perf_counter() - t1
    wall = time.perf_counter() - t0
    table = summary_table(records, wall, len(source.items), assemble_s=assemble_s)
    print(table)
    print(f"features: {features_path}" + (f"   errors: {errors_path} ({len(failures)})" if failures else ""))
    _write_summary(out, records, wall, assemble_s, args)
    return 0


def choose_recipe(recipe: str | None, dataset: str | None, text_encoder: str | None, extractors: list[str],
                  settings: list[str]) -> tuple[str, str, list[str]]:
    """(recipe, --extractors, --set) once ``--dataset`` and ``--text-encoder`` are applied.

    A SIMS dataset defaults to the ``sims`` recipe (multilingual e5 text: MiniLM's vocabulary is English);
    ``--text-encoder DIR`` replaces the text extractor by ``hf`` on that folder.
    """
    from msa.extractors import DATASET_RECIPES
    from msa.pipeline.train.data import DATASETS

    if dataset is not None and dataset not in DATASETS:
        raise UsageError(f"--dataset: unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    recipe = recipe or DATASET_RECIPES.get(dataset or "", "default")
    overrides = ",".join(extractors)
    if text_encoder:
        texts = [p.partition(":")[2] for part in extractors for p in part.split(",") if p.strip().startswith("text:")]
        if any(t != "hf" for t in texts):
            raise UsageError(f"--text-encoder sets text:hf; it cannot go with --extractors text:{texts[0]}")
        overrides = ",".join(filter(None, [overrides, "text:hf"]))
        settings = [*settings, f"text.model={text_encoder}"]
    return recipe, overrides, settings


def resolve_extractors(recipe: str, overrides: str, settings: list[str],
                       memo: Path | None = None) -> tuple[dict[str, Any], dict[str, dict]]:
    """Recipe + ``--extractors`` + ``--set`` -> {modality: ExtractorRef} and {modality: spec dict}."""
    from msa.extractors import EXTRACTORS, RECIPES

    from msa.pipeline.extract.runner import ExtractorRef

    chosen = dict(RECIPES[recipe])
    for part in filter(None, (s.strip() for s in overrides.split(","))):
        modality, sep, name = part.partition(":")
        modality = extract_name(modality)
        if not sep or modality not in ("asr", "text", "audio", "visual"):
            raise UsageError(f"--extractors: expected MOD:NAME with MOD in asr/text/audio/visual, got {part!r}")
        chosen[modality] = name
    changes: dict[str, dict[str, Any]] = {}
    for s in settings:
        lhs, sep, value = s.partition("=")
        modality, dot, key = lhs.partition(".")
        modality = extract_name(modality)
        if not sep or not dot or modality not in chosen:
            raise UsageError(f"--set: expected MOD.KEY=VALUE for an active modality ({', '.join(chosen)}), got {s!r}")
        changes.setdefault(modality, {})[key] = value
    refs: dict[str, Any] = {}
    specs: dict[str, dict] = {}
    for modality in ("asr", "text", "audio", "visual"):
        name = chosen.get(modality, "none")
        if name == "none":
            if modality in changes:
                raise UsageError(f"--set {modality}.*: modality {modality} is disabled")
            continue
        cls = EXTRACTORS.get(name)
        if cls.modality != modality:
            raise UsageError(f"--extractors {modality}:{name}: {name} is a {cls.modality} extractor")
        config = _configure(cls, changes.get(modality, {}))
        refs[modality] = ExtractorRef(modality, cls, config)
        if modality != "asr":  # ASR's spec is only computed where a clip needs it (no model load otherwise)
            specs[modality] = _spec(cls(config), memo)
    if not specs:
        raise UsageError("no text, audio or visual extractor selected")
    return refs, specs


def _spec(extractor: Any, memo: Path | None) -> dict[str, Any]:
    """``extractor.spec().to_dict()``, memoised on disk by everything spec_hash covers.

    ``describe()`` may build the backend (openSMILE imports pandas: seconds); a fully cached rerun
    should not pay that. The memo key is the spec_hash input itself, so it can never go stale.
    """
    from msa.core.io import atomic_write_bytes
    from msa.core.hashing import json_sha256

    key = json_sha256({"class": f"{type(extractor).__module__}:{type(extractor).__qualname__}",
                       "name": extractor.name, "version": extractor.version,
                       "config": dataclasses.asdict(extractor.config), "weights": extractor.weights_identity()}, 32)
    path = memo / f"{key}.json" if memo is not None else None
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # unreadable memo: recompute
    spec = extractor.spec().to_dict()
    if path is not None:
        try:
            atomic_write_bytes(path, json.dumps(spec).encode())
        except OSError:
            pass  # the memo is an optimisation; the writable check reports a bad output folder
    return spec


def _configure(cls: type, changes: dict[str, str]) -> Any:
    """The extractor's config with ``--set`` values, validated like every config (one line when bad)."""
    from msa.core.config import ConfigError, from_text

    try:
        return from_text(cls.Config, changes)
    except ConfigError as e:
        raise e.within(f"--set {cls.name}") from e


def parse_max_len(text: str) -> dict[str, int | None]:
    """'50' -> every modality; 'text=50,audio=400,vision=300' -> per modality (our names)."""
    if not text:
        return {}
    try:
        if "=" not in text:
            n = int(text)
            out: dict[str, int | None] = {m: n for m in EXTRACT}
        else:
            out = {}
            for part in text.split(","):
                k, _, v = part.partition("=")
                if extract_name(k.strip()) not in EXTRACT:
                    raise ValueError(k)
                out[extract_name(k.strip())] = int(v)
    except ValueError as e:
        raise UsageError(f"--max-len: expected N or text=N,audio=N,vision=N, got {text!r}") from e
    if any(v is not None and v < 1 for v in out.values()):
        raise UsageError("--max-len values must be at least 1")
    return out


def _assemble(entries: list, specs: dict, records: list, source: Any, plan: Any, max_len: dict,
              out: Path, fmt: str) -> Path:
    from msa.pipeline.extract.assemble import assemble, write_features
    from msa.pipeline.extract.cache import FeatureCache

    asr = next((r.asr_spec for r in records if r.asr_spec), None)
    text = next((r for r in plan.extractors if r.modality == "text"), None)
    vocabulary = getattr(text.build(), "vocabulary", None) if text is not None else None
    data = assemble(
        entries, specs, FeatureCache(out), has_modes=source.has_modes, sub_label_keys=source.sub_label_keys,
        max_len=max_len, aligned=plan.align, text_vocab=vocabulary() if vocabulary else None,
        class_names=source.class_names, extra_columns=source.extra_columns,
        extra_config={"asr": asr, "missing": plan.missing, "source": source.kind,
                      "failed": sorted(r.item.id for r in records if r.error is not None)},
    )
    return write_features(data, out / f"features.{fmt}", fmt)


def _check_writable(out: Path, error: type) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise error(f"output folder {out} is not writable ({e.strerror or e})") from e


def _atomic_text(path: Path, text: str) -> None:
    from msa.core.io import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


def _write_report(out: Path, e: LabelCsvError) -> None:
    """The full list of label.csv problems (the error line shows the first ones)."""
    try:
        _atomic_text(out / "label_errors.txt", "\n".join(e.problems) + "\n")
    except OSError:
        return
    e.args = (f"{e.args[0]} (all {len(e.problems)} listed in {out / 'label_errors.txt'})",)


def _write_summary(out: Path, records: list, wall: float, assemble_s: float, args: argparse.Namespace) -> None:
    from msa.pipeline.cli.extract_report import summarize

    summary = summarize(records, wall, assemble_s)
    summary.update({"jobs": args.jobs, "backend": args.backend})
    _atomic_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
