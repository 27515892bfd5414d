"""End to end: ``msa-serve`` (a real process on 127.0.0.1) with the shipped default bundle and the real
offline extractors; the example clip through a headless Chromium (the page) and through the API.

The browser test needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them when
it runs as root with apt-get) and Selenium; without them it skips and says why. It saves a screenshot
of the page in the test's temporary folder; with ``MSA_SCREENSHOT=docs/img/serve.png`` it writes the one
README shows instead (so a plain test run never changes the working tree).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from msa.pipeline.serve.demo import make_example_clip

pytestmark = pytest.mark.slow
START_S, RESULT_S = 300, 600
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1100,1500")
KEYS = {"clip", "task", "score", "label", "transcript", "language", "modalities", "face_ratio", "speech_seconds",
        "timings", "transcript_source", "range", "flags", "plot", "voice", "face"}  # voice/face: the affect readouts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - 127.0.0.1 only
        return json.loads(r.read())


@pytest.fixture(scope="module")
def example_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_example_clip(tmp_path_factory.mktemp("serve") / "example.mp4")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("uvicorn", reason="msa-serve needs the 'serve' extra")
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "msa-serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "msa.pipeline.cli.serve", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                if get_json(f"{url}/v1/health")["status"] == "ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"msa-serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert f"serving http://127.0.0.1:{port}/" in text


def chrome(tmp: Path):
    """A headless Chromium driven by Selenium, or a skip that names what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the 'dev' extra)")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver; `make test` does it "
                    "when it runs as root)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)


def test_page_in_a_real_browser(server, example_clip, tmp_path):
    """Open the page, upload the example clip, wait for the result card, check it, save the screenshot."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chrome(tmp_path)
    try:
        driver.get(server + "/")
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#bundle option"))
        assert "default (sentiment: text)" in driver.find_element(By.ID, "bundle").text
        driver.find_element(By.ID, "segments").send_keys("1.5")  # runs of 1.5 s: one per sentence
        driver.find_element(By.ID, "file").send_keys(str(example_clip))
        WebDriverWait(driver, RESULT_S).until(
            lambda d: d.find_element(By.ID, "result").is_displayed() or d.find_element(By.ID, "error").is_displayed())
        assert not driver.find_element(By.ID, "error").is_displayed(), driver.find_element(By.ID, "error").text
        text = lambda i: driver.find_element(By.ID, i).text  # noqa: E731
        assert text("r-label") == "positive" and text("r-score").startswith("+")
        assert "love" in text("r-transcript").lower() and "asr:whisper" in text("r-transcript")
        assert text("r-drivers") == "text 1.00" and text("r-face").endswith("of frames")
        assert text("r-clip") == "example.mp4" and text("r-speech").endswith(" s")
        runs = text("r-segments").splitlines()  # "0.0-1.6 s +2.63 positive: I really love this movie,"
        assert len(runs) >= 2 and all(" positive: " in r for r in runs) and "love" in runs[0].lower(), runs
        WebDriverWait(driver, 30).until(ec.visibility_of_element_located((By.ID, "r-plot")))
        assert driver.execute_script("return document.getElementById('r-plot').naturalWidth") >= 600
        rows = driver.find_elements(By.CSS_SELECTOR, "#rows tr")
        assert len(rows) == 1 and "example.mp4" in rows[0].text and "positive" in rows[0].text
        assert driver.find_element(By.ID, "csv").is_displayed()
        shot = Path(os.environ.get("MSA_SCREENSHOT") or tmp_path / "serve.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        # the example clip: no "read only the start" row; a result whose transcript was cut shows how much was read
        assert not driver.find_element(By.ID, "r-cut").is_displayed()
        driver.execute_script("showResult(arguments[0], 'default')", {
            "label": "positive", "range": [-3, 3], "score": 1.0, "clip": "long.mp4", "task": "sentiment",
            "transcript": "...", "transcript_source": "given", "modalities": {"text": 1.0}, "face_ratio": None,
            "speech_seconds": None, "timings": {}, "plot": None, "truncated": {"text": [128, 240]}})
        assert driver.find_element(By.ID, "r-cut").is_displayed() and text("r-cut") == "text 128 of 240 tokens"
        assert not driver.find_element(By.ID, "r-segments").is_displayed()  # a result without runs
        driver.execute_script("showResult(arguments[0], 'default')", {  # msa-serve --segments
            "label": "positive", "range": [-3, 3], "score": 1.5, "clip": "long.mp4", "task": "sentiment",
            "transcript": "...", "transcript_source": "asr:whisper", "modalities": {"text": 1.0}, "face_ratio": None,
            "speech_seconds": 9.0, "timings": {}, "plot": None, "truncated": {"text": [300, 310]},
            "segments": [{"start": 0, "end": 4.2, "text": "I loved it.", "score": 2.5, "label": "positive"},
                         {"start": 5, "end": 9.1, "text": "The end was slow.", "score": -0.7, "label": "negative",
                          "truncated": {"text": [128, 138]}}]})
        assert text("r-segments").splitlines() == ["0.0-4.2 s +2.50 positive: I loved it.",
                                                   "5.0-9.1 s -0.70 negative: The end was slow."]
        assert text("r-cut-label") == "read only the start of some segments"
    finally:
        driver.quit()


def test_api_on_the_example_clip(server, example_clip):
    """The same JSON as msa-predict --json, from the running service, with a plot URL that serves a PNG."""
    import httpx

    bundles = get_json(f"{server}/v1/bundles")
    assert [b["name"] for b in bundles] == ["default"] and bundles[0]["modalities"] == ["text"]
    with open(example_clip, "rb") as f:
        r = httpx.post(f"{server}/v1/predict", files={"file": ("example.mp4", f, "video/mp4")}, timeout=RESULT_S)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == KEYS
    assert out["clip"] == "example.mp4" and out["label"] == "positive" and out["modalities"] == {"text": 1.0}
    assert "love" in out["transcript"].lower() and out["face_ratio"] > 0.5
    png = httpx.get(server + out["plot"], timeout=30)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    bad = httpx.post(f"{server}/v1/predict", files={"file": ("notes.txt", b"not a clip\n" * 50, "text/plain")},
                     timeout=60)
    assert bad.status_code == 415 and bad.json()["reason"] == "not_media"
    assert bad.json()["error"].startswith("notes.txt")
