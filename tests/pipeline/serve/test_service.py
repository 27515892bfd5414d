"""msa-serve's API through an ASGI client, on generated clips with the fake extractors and tiny bundles.

The real default bundle and a real browser are exercised in tests/e2e/test_serve_e2e.py; the load
test is tests/pipeline/serve/test_service_load.py.
"""
from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import pytest

import extract_fakes
from msa.extractors import EXTRACTORS
from msa.pipeline.cli.predict import main as predict_main
from msa.pipeline.serve.jobs import JOB_STAGES
from msa.pipeline.serve.service import ServeConfig, Service, bundle_names, create_app
from test_predict import FAKES, MOSI, save_lmf_bundle

starlette = pytest.importorskip("starlette", reason="msa-serve needs the 'serve' extra")
from starlette.testclient import TestClient  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


class FakeWords(extract_fakes.FakeText):
    """fake_text with token ids inside the tiny BERT's 30522-word vocabulary."""

    name = "fake_words"

    def extract(self, clip):
        feats = super().extract(clip)
        feats.extra["text_bert"][0] %= 30000
        return feats


@pytest.fixture(autouse=True, scope="module")
def _fakes() -> None:
    extract_fakes.register()
    if FakeWords.name not in EXTRACTORS:
        EXTRACTORS.register(FakeWords.name, FakeWords)


@pytest.fixture(scope="module")
def lmf_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bundle")
    return save_lmf_bundle(d / "lmf", d / "log")


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text-only bundle (tiny text_regressor over fake_words features)."""
    import torch

    from msa.models import MODELS, build_config
    from msa.models.base import Dims
    from msa.pipeline.train.bundle import save_bundle

    torch.manual_seed(0)
    cfg = build_config("text_regressor", "mosi", "tiny")
    dims = Dims(text=0, audio=1, vision=1, text_len=8, audio_len=1, vision_len=1)
    model = MODELS.get("text_regressor")(cfg, dims, MOSI)
    return save_bundle(tmp_path_factory.mktemp("text") / "words", model, model_name="text_regressor", config=cfg,
                       task=MOSI, dims=dims, specs={"text": FakeWords().spec().to_dict()})


def serve(bundles: tuple[Path, ...], **kw) -> TestClient:
    config = ServeConfig(bundles=bundles, signals=(), asr="fake_asr", affect=False, **kw)
    return TestClient(create_app(config), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(lmf_bundle: Path, text_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("allowed")
    with serve((lmf_bundle, text_bundle), workers=2, allow_root=root) as c:
        c.allowed = root  # type: ignore[attr-defined]
        yield c


def upload(client: TestClient, path: Path, name: str | None = None, query: str = "", **fields: str):
    with open(path, "rb") as f:
        return client.post(f"/v1/predict{query}", files={"file": (name or path.name, f, "video/mp4")}, data=fields)


def uploads_left(client: TestClient) -> list[Path]:
    return list(client.app.state.service.uploads.iterdir())


def assert_error(r, status: int, reason: str, *needles: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "reason"} and body["reason"] == reason
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    assert "msa-serve-" not in body["error"]  # never the private upload folder
    for n in needles:
        assert n in body["error"], body["error"]
    return body["error"]


# --- what is loaded --------------------------------------------------------------------------------

def test_health_and_bundles(client, lmf_bundle):
    h = client.get("/v1/health").json()
    assert h["status"] == "ok" and h["bundles"] == ["lmf", "words"] and h["workers"] == 2
    assert h["stages"] == list(JOB_STAGES)
    b = client.get("/v1/bundles").json()
    assert [x["name"] for x in b] == ["lmf", "words"] and [x["default"] for x in b] == [True, False]
    assert b[0]["task"] == "sentiment" and b[0]["range"] == [-3.0, 3.0] and b[0]["model"] == "lmf"
    assert b[0]["modalities"] == ["text", "audio", "vision"] and b[1]["modalities"] == ["text"]
    assert b[0]["path"] == str(lmf_bundle) and isinstance(b[0]["provenance"], dict)


def test_bundle_names_are_unique():
    assert bundle_names((Path("a/default"), Path("b/default"), Path("c/phq8"))) == ["default", "default-2", "phq8"]


def test_page_and_its_files_are_served_locally(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for src in ("/static/app.js", "/static/style.css"):
        assert src in r.text and client.get(src).status_code == 200
    assert "http://" not in r.text and "https://" not in r.text  # no CDN
    assert client.get("/static/../service.py").status_code == 404


# --- predictions ---------------------------------------------------------------------------------

def test_upload_returns_msa_predict_json(client, lmf_bundle, av_clip, tmp_path, capsys):
    """The same object msa-predict --json prints: same keys and values, the client's name, a plot URL."""
    r = upload(client, av_clip, "my talk.mp4")
    assert r.status_code == 200, r.text
    out = r.json()
    assert predict_main([str(av_clip), "--bundle", str(lmf_bundle), "--json", "--plot", str(tmp_path / "p.png"),
                         *FAKES]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert set(out) == set(cli)
    for key in ("task", "score", "label", "transcript", "modalities", "face_ratio", "speech_seconds",
                "transcript_source", "range", "flags"):
        assert out[key] == cli[key], key
    assert out["clip"] == "my talk.mp4" and out["transcript"] == "tone tone"
    assert set(out["timings"]) >= {"model", "total", "plot"}
    png = client.get(out["plot"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content.startswith(PNG)
    assert uploads_left(client) == []  # the upload is deleted after the result


def test_chosen_bundle_and_given_transcript(client, av_clip):
    r = upload(client, av_clip, bundle="words", transcript="what a day", plot="false")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["modalities"] == {"text": 1.0} and out["transcript"] == "what a day"
    assert out["transcript_source"] == "given" and "plot" not in out
    assert_error(upload(client, av_clip, bundle="nope"), 400, "bad_request", "unknown bundle 'nope'", "lmf, words")


def test_a_job_reports_progress_by_stage(client, av_clip, make_clip):
    clip = make_clip(duration=1.0, tone_hz=300.0)  # not in the cache yet: every stage runs
    r = upload(client, clip, "a.mp4", query="?wait=false")
    assert r.status_code == 202 and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    job = r.json()
    assert job["status"] in ("queued", "running") and job["clip"] == "a.mp4"
    for _ in range(600):
        job = client.get(r.headers["location"]).json()
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert job["status"] == "done" and job["progress"] == 1.0
    assert job["stages"][:2] == ["hash", "probe"] and job["stages"][-2:] == ["model", "plot"]
    assert set(job["stages"]) == set(JOB_STAGES)  # nothing cached: every stage ran
    assert job["result"]["clip"] == "a.mp4" and job["result"]["plot"].endswith("/plot.png")


def test_long_clips_become_jobs(lmf_bundle, av_clip):
    with serve((lmf_bundle,), long_seconds=1.0) as c:
        r = upload(c, av_clip)  # 2 s of media > 1 s
        assert r.status_code == 202
        assert c.get(f"/v1/jobs/{r.json()['id']}").status_code == 200


def test_segments_apply_to_every_bundle_but_phq8(lmf_bundle, av_clip, tmp_path):
    """msa-serve --segments: a sentiment bundle answers with its runs (as msa-predict --segments), a PHQ-8
    bundle loaded beside it scores the whole session."""
    from msa.models.base import Task

    phq8 = save_lmf_bundle(tmp_path / "phq8", tmp_path / "log", task=Task("phq8", 0.0, 24.0, "phq8"))
    with serve((lmf_bundle, phq8), segments=0.5) as c:
        r = upload(c, av_clip)
        assert r.status_code == 200, r.text
        runs = r.json()["segments"]
        assert [s["text"] for s in runs] == ["tone", "tone"] and {"start", "end", "score", "label"} <= set(runs[0])
        r = upload(c, av_clip, bundle="phq8")
        assert r.status_code == 200, r.text
        assert "segments" not in r.json() and r.json()["task"] == "phq8"


def test_segments_per_request(client, lmf_bundle, av_clip, tmp_path):
    """The form field (or JSON key) ``segments`` sets --segments for one clip; 0 turns the service's off;
    a bad value is a 400, and so is asking a PHQ-8 bundle for runs."""
    from msa.models.base import Task

    r = upload(client, av_clip, segments="0.5")
    assert r.status_code == 200, r.text
    assert [s["text"] for s in r.json()["segments"]] == ["tone", "tone"]
    assert "segments" not in upload(client, av_clip).json()  # this service scores whole clips by default
    (client.allowed / "talk.mp4").write_bytes(av_clip.read_bytes())
    r = client.post("/v1/predict", json={"path": "talk.mp4", "segments": 0.5})
    assert r.status_code == 200, r.text
    assert len(r.json()["segments"]) == 2
    srt = "1\n00:00:00,000 --> 00:00:00,900\nwhat a day.\n\n2\n00:00:01,100 --> 00:00:02,000\nso dull\n"
    r = upload(client, av_clip, transcript=srt, segments="0.5")  # a subtitle in the form field times its words
    assert r.status_code == 200, r.text
    assert [(s["start"], s["text"]) for s in r.json()["segments"]] == [(0.0, "what a day."), (1.1, "so dull")]
    assert r.json()["transcript"] == "what a day. so dull" and r.json()["transcript_source"] == "given"
    for bad in ("-1", "nan", "soon"):
        assert_error(upload(client, av_clip, segments=bad), 400, "bad_request", "segments: expected a positive number")
    # plain text has no word times: that clip cannot be cut (422, as msa-predict's one-line error)
    assert_error(upload(client, av_clip, transcript="what a day", segments="0.5"), 422, "no_word_timings",
                 "the given transcript has none")
    with serve((lmf_bundle,), segments=0.5) as c:
        assert "segments" not in upload(c, av_clip, segments="0").json()
    phq8 = save_lmf_bundle(tmp_path / "phq8", tmp_path / "log", task=Task("phq8", 0.0, 24.0, "phq8"))
    with serve((phq8,)) as c:
        assert_error(upload(c, av_clip, segments="5"), 400, "usage", "whole session")


def test_a_path_under_the_allowed_root(client, av_clip, tmp_path):
    (client.allowed / "sub").mkdir(exist_ok=True)
    shutil.copy(av_clip, client.allowed / "sub" / "talk.mp4")
    r = client.post("/v1/predict", json={"path": "sub/talk.mp4", "plot": False})
    assert r.status_code == 200, r.text
    assert r.json()["clip"] == "sub/talk.mp4" and (client.allowed / "sub" / "talk.mp4").is_file()  # never deleted
    r = client.post("/v1/predict", json={"path": str(client.allowed / "sub" / "talk.mp4"), "plot": False})
    assert r.status_code == 200, r.text

    outside = tmp_path / "secret.mp4"
    shutil.copy(av_clip, outside)
    (client.allowed / "link.mp4").symlink_to(outside)
    for path in ("../secret.mp4", "sub/../../secret.mp4", str(outside), "link.mp4"):
        assert_error(client.post("/v1/predict", json={"path": path}), 403, "outside_root")
    assert_error(client.post("/v1/predict", json={"path": "sub/none.mp4"}), 404, "not_found", "no such file")
    assert_error(client.post("/v1/predict", json={"path": 3}), 400, "bad_request")
    assert_error(client.post("/v1/predict", content=b"{", headers={"content-type": "application/json"}),
                 400, "bad_request", "not JSON")


def test_paths_are_off_without_an_allowed_root(lmf_bundle, av_clip):
    with serve((lmf_bundle,)) as c:
        assert_error(c.post("/v1/predict", json={"path": str(av_clip)}), 403, "outside_root", "--allow-root")


# --- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["random_bytes", "text_renamed", "truncated", "empty"])
def test_not_a_media_file_is_415(client, bad_media, kind):
    msg = assert_error(upload(client, bad_media[kind], f"{kind}.mp4"), 415, "corrupt_media", f"{kind}.mp4")
    assert msg.startswith(f"{kind}.mp4")
    assert uploads_left(client) == []


def test_only_media_files_are_taken(client, bad_media):
    """A .txt would be read by ffmpeg as ANSI-art video, and by the Predictor as the clip's transcript."""
    for name in ("notes.txt", "run.sh", "model.pkl"):
        assert_error(upload(client, bad_media["text_renamed"], name), 415, "not_media", name, "not a media file")
    assert_error(upload(client, bad_media["text_renamed"], "noextension"), 415, "corrupt_media", "noextension")
    (client.allowed / "notes.txt").write_text("not a clip\n" * 50)
    assert_error(client.post("/v1/predict", json={"path": "notes.txt"}), 415, "not_media")
    assert uploads_left(client) == []


def test_missing_streams_and_speech_are_422(client, video_only_clip):
    assert_error(upload(client, video_only_clip, "silent.mp4"), 422, "no_audio", "silent.mp4", "audio stream")
    assert_error(upload(client, video_only_clip, "silent.mp4", bundle="words"), 422, "no_speech",
                 "no audio stream to transcribe")


def test_too_large_is_refused_while_streaming(lmf_bundle, av_clip):
    with serve((lmf_bundle,), max_upload_mb=0.001) as c:  # 1 KiB
        big = io.BytesIO(b"\0" * 64 * 1024)
        r = c.post("/v1/predict", files={"file": ("big.mp4", big, "video/mp4")},
                   headers={"content-length": "9999999"})
        assert_error(r, 413, "too_large", "limit")

        def body():  # chunked, no Content-Length: the limit is checked as the bytes arrive
            yield b"--b\r\ncontent-disposition: form-data; name=\"file\"; filename=\"x.mp4\"\r\n\r\n"
            for _ in range(100):
                yield b"\0" * 1024
            yield b"\r\n--b--\r\n"

        r = c.post("/v1/predict", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert_error(r, 413, "too_large")
        assert uploads_left(c) == []


def test_malformed_requests_are_4xx(client, av_clip):
    assert_error(client.post("/v1/predict", content=b"raw", headers={"content-type": "video/mp4"}), 415,
                 "bad_request", "multipart/form-data")
    assert_error(client.post("/v1/predict", data={"bundle": "lmf"}, files={"other": ("x", b"1")}), 400,
                 "bad_request", "no 'file' part")
    assert_error(client.post("/v1/predict?wait=maybe", files={"file": ("a.mp4", b"1")}), 400, "bad_request")
    assert_error(client.get("/v1/jobs/nope"), 404, "not_found")
    assert_error(client.get("/v1/nothing"), 404, "not_found")
    assert client.get("/v1/predict").status_code == 405
    assert uploads_left(client) == []


def test_a_crash_fails_one_request_not_the_service(client, av_clip, monkeypatch):
    svc: Service = client.app.state.service

    def boom(*a, **k):
        raise RuntimeError("model exploded\nsecond line")

    monkeypatch.setattr("msa.pipeline.serve.service.predict_json", boom)
    assert_error(upload(client, av_clip, "a.mp4"), 500, "internal", "a.mp4", "RuntimeError", "model exploded")
    monkeypatch.undo()
    assert upload(client, av_clip, plot="0").status_code == 200  # the same workers carry on
    assert svc.jobs.counts()["failed"] >= 1 and uploads_left(client) == []
