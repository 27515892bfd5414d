"""Load test: msa-serve on 127.0.0.1 (uvicorn), 50 uploads 8 at a time over 2 workers, fake extractors.

Asserts that every request is answered 200 with its own clip name and transcript (none lost, none
mixed up) and that the service ran each exactly once. It prints the latency percentiles; the
figures for the real default bundle come from ``bench/serve_load.py`` (docs/benchmarks.md).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import extract_fakes
from test_predict import save_lmf_bundle

pytest.importorskip("uvicorn", reason="msa-serve needs the 'serve' extra")
BENCH = Path(__file__).resolve().parents[3] / "bench" / "serve_load.py"


def _bench():
    spec = importlib.util.spec_from_file_location("serve_load", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_load"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_fifty_requests_eight_at_a_time_none_lost_or_mixed_up(tmp_path, make_clip):
    from msa.pipeline.serve.service import ServeConfig, create_app

    bench = _bench()
    extract_fakes.register()
    bundle = save_lmf_bundle(tmp_path / "lmf", tmp_path / "log")
    clips = [make_clip(duration=1.0 + 0.1 * i, size=(64, 48), tone_hz=220.0 * (i + 1)) for i in range(5)]
    app = create_app(ServeConfig(bundles=(bundle,), workers=2, signals=(), asr="fake_asr", affect=False))
    sent = bench.requests_for(clips, 50)
    assert len({s.name for s in sent}) == len({s.transcript for s in sent}) == 50
    with bench.serving(app) as url:
        assert url.startswith("http://127.0.0.1:")
        answers, wall = bench.run_load(url, sent, concurrency=8)
        counts = app.state.service.jobs.counts()
        assert list(app.state.service.uploads.iterdir()) == []  # every upload deleted after its result
    report = bench.summary(answers, wall)
    print(f"\nmsa-serve load (fakes, 2 workers, 8 concurrent): {report}")
    assert [a.sent for a in answers] == sent
    assert report["status"] == {"200": 50}, [a.body for a in answers if a.status != 200][:3]
    assert report["mixed_up"] == 0
    assert all(a.body["clip"] == a.sent.name and a.body["transcript"] == a.sent.transcript for a in answers)
    assert counts["done"] == 50 and counts["queued"] == counts["running"] == 0
    assert not app.state.service.root.exists()  # the private folder goes when the service stops
