"""RAVDESS speech as an msa dataset: ``label.csv`` + ``Raw/Actor_XX/<file>.flac`` (symlinks), split by actor.

RAVDESS names encode the labels (``MM-VV-EE-II-SS-RR-AA``: EE emotion, II intensity, SS statement,
AA actor). The tree this writes is what ``msa-extract`` reads: ``class`` is the emotion, ``actor``
the speaker, ``mode`` test for actors 21-24 and, of actors 1-20, valid for ``--valid-actors``
(default 17-20: grouped by actor, so no speaker is in two splits) and train for the rest,
``text`` the statement (so no speech recognition is needed). The audio itself is never copied.
Licence of the data and of anything trained on it: CC BY-NC-SA 4.0 (see ../shared/data/SOURCES.md).

    .venv/bin/python checkpoints/ravdess.py ../shared/data/emotion/ravdess /tmp/ravdess_ds
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
            "07": "disgust", "08": "surprised"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
TEST_ACTORS = range(21, 25)
VALID_ACTORS = (17, 18, 19, 20)  # two male (odd), two female (even): model selection only


def parse_name(stem: str) -> dict[str, str]:
    """The labels a RAVDESS file name encodes; ValueError for a name that is not one."""
    parts = stem.split("-")
    if len(parts) != 7 or parts[2] not in EMOTIONS or parts[4] not in STATEMENTS:
        raise ValueError(f"not a RAVDESS file name: {stem}")
    return {"class": EMOTIONS[parts[2]], "intensity": "strong" if parts[3] == "02" else "normal",
            "text": STATEMENTS[parts[4]], "actor": f"{int(parts[6]):02d}"}


def build(src: Path, out: Path, actors: set[int] | None = None, valid: tuple[int, ...] = VALID_ACTORS) -> int:
    """Write ``out/label.csv`` and ``out/Raw`` symlinks for the ``Actor_XX/*.flac`` under ``src``
    (only ``actors`` when given; ``valid`` actors in the valid split); returns the number of rows."""
    rows = []
    for path in sorted(src.glob("Actor_*/*.flac")):
        info = parse_name(path.stem)
        if actors is not None and int(info["actor"]) not in actors:
            continue
        video_id = path.parent.name
        link = out / "Raw" / video_id / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            os.symlink(path.resolve(), link)
        actor = int(info["actor"])
        mode = "test" if actor in TEST_ACTORS else "valid" if actor in valid else "train"
        rows.append({"video_id": video_id, "clip_id": path.stem, "label": "", "class": info["class"],
                     "text": info["text"], "mode": mode, "actor": info["actor"], "intensity": info["intensity"]})
    if not rows:
        raise SystemExit(f"no RAVDESS files under {src}/Actor_*/")
    with open(out / "label.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="the RAVDESS folder (Actor_01 ... Actor_24)")
    p.add_argument("out", type=Path, help="dataset folder to write (label.csv + Raw/)")
    p.add_argument("--actors", type=int, nargs="*", default=None, help="only these actors (e.g. for a smoke run)")
    p.add_argument("--valid-actors", type=int, nargs="*", default=list(VALID_ACTORS),
                   help="actors of 1-20 in the valid split (default 17 18 19 20)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    n = build(args.src, args.out, set(args.actors) if args.actors else None, tuple(args.valid_actors))
    print(f"{n} clips -> {args.out / 'label.csv'}")


if __name__ == "__main__":
    main()
