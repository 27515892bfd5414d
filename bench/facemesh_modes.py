"""How much ``facemesh_au`` features move between static mode (version 1) and tracking (version 2).

    .venv/bin/python bench/facemesh_modes.py [--data ../shared/data/video] [--fps 10]

Per clip: the share of frames with a face in each mode, and over the frames where both found one,
the mean absolute difference of the 13 AU proxies (averaged over proxies), of AU12 and of the head
pose (degrees, averaged over pitch/yaw/roll). "static" is the old default (every frame detected
afresh, up to 3 faces, the largest described); "tracking" the new one (video mode restarted per
clip, one face).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from msa.extractors.facemesh import AU_COLUMNS, COLUMNS, FaceMeshAU
from msa.pipeline.extract.clip_input import Clip

REPO = Path(__file__).resolve().parents[1]
VIDEO_EXTS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".mpg"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "video")
    p.add_argument("--fps", type=float, default=10.0)
    a = p.parse_args()
    static, tracking = FaceMeshAU(fps=a.fps, tracking=False, max_faces=3), FaceMeshAU(fps=a.fps)
    au = slice(0, len(AU_COLUMNS))
    au12, pose = COLUMNS.index("AU12"), [COLUMNS.index(c) for c in ("pose_pitch", "pose_yaw", "pose_roll")]
    print(f"| clip | face ratio static | face ratio tracking | mean abs diff AU proxies | AU12 | pose (deg) |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in sorted(q for q in a.data.iterdir() if q.suffix.lower() in VIDEO_EXTS):
        clip = Clip.from_path(path)
        s, t = static.extract(clip), tracking.extract(clip)
        both = (s.data[:, -1] == 1) & (t.data[:, -1] == 1)
        diff = np.abs(s.data[both] - t.data[both])
        cells = [f"{diff[:, au].mean():.3f}", f"{diff[:, au12].mean():.3f}", f"{diff[:, pose].mean():.2f}"] \
            if both.any() else ["-"] * 3
        print(f"| {path.name} | {s.meta['face_ratio']:.3f} | {t.meta['face_ratio']:.3f} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
