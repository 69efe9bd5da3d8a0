"""swrr-serve as a real uvicorn process on a free localhost port, talked to over HTTP: the same
numbers as swrr-predict, the bad-input catalogue, a bounded concurrent load, long files,
security defaults, time limits, and the page in a real headless browser."""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra (pip install 'swrr[serve]') is not installed")
requests = pytest.importorskip("requests")

from tests.conftest import write_wav  # noqa: E402
from tests.test_predict import DEMO, predict, trained  # noqa: E402,F401 (a fixture)

pytestmark = pytest.mark.slow  # real server processes: each loads the model (~10-30 s on a loaded machine)

DEMO_CLIP, DEMO_TEXT = DEMO / "wav" / "S1M_ang_2.wav", "Get out of my way!"  # the README's demo clip
CLIENT_TIMEOUT = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m swrr.predict.server` on a free port of 127.0.0.1, stopped by stop()."""

    def __init__(self, model, *options: str, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = subprocess.Popen([sys.executable, "-m", "swrr.predict.server", "--model", str(model),
                                         "--port", str(self.port), "--device", "cpu", *options],
                                        stdout=open(log, "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"swrr-serve exited: {log.read_text()}"
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"swrr-serve did not answer /health within 300 s: {log.read_text()}")

    def post(self, files=None, data=None, **kwargs):
        return requests.post(self.url + "/predict", files=files, data=data, timeout=CLIENT_TIMEOUT, **kwargs)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):  # noqa: F811
    log = tmp_path_factory.mktemp("serve") / "server.log"
    running = Server(trained[0], "--max-queue", "4", "--max-batch", "8", "--batch-wait-ms", "20",
                     "--max-upload-mb", "2", "--max-audio-seconds", "60", log=log)
    yield running
    running.stop()


def clip(path=DEMO_CLIP):
    return {"file": (Path(path).name, Path(path).read_bytes(), "audio/wav")}


def assert_error(response, status: int, *words: str):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and all(w in body["error"] for w in words), body
    assert "\n" not in body["error"] and "swrr-serve-" not in body["error"]  # one line, no server temp path
    assert ".wav.wav" not in body["error"]  # the client's name in place of the server's, not beside it


def test_the_demo_clip_gets_swrr_predicts_probabilities(server, trained, tmp_path):  # noqa: F811
    response = server.post(clip(), {"text": DEMO_TEXT})
    assert response.status_code == 200, response.text
    body = response.json()
    _, table = predict(tmp_path, trained[0], [DEMO_CLIP], texts=[DEMO_TEXT], segment="vad")
    row = table.iloc[0]
    names = list(body["probabilities"])
    assert names == [c[len("prob_"):] for c in table.columns if c.startswith("prob_")]
    np.testing.assert_allclose([body["probabilities"][n] for n in names], [row[f"prob_{n}"] for n in names],
                               atol=1e-6, rtol=0)
    assert body["label"] == row["label"] and body["transcript"] == DEMO_TEXT and body["text_source"] == "given"
    assert body["file"] == DEMO_CLIP.name and body["duration"] == pytest.approx(row["end"])
    raw = server.post(clip(), {"text": DEMO_TEXT, "calibration": "false"}).json()
    _, raw_table = predict(tmp_path, trained[0], [DEMO_CLIP], texts=[DEMO_TEXT], segment="vad", calibration=False,
                           name="raw.csv")
    np.testing.assert_allclose([raw["probabilities"][n] for n in names],
                               [raw_table.iloc[0][f"prob_{n}"] for n in names], atol=1e-6, rtol=0)
    abstained = server.post(clip(), {"text": DEMO_TEXT, "abstain_below": "1"}).json()
    assert abstained["label"] == "abstain" and abstained["probabilities"] == body["probabilities"]


def test_health_model_and_docs(server, trained):  # noqa: F811
    health = requests.get(server.url + "/health", timeout=10).json()
    assert health["status"] == "ok" and health["max_queue"] == 4
    model = requests.get(server.url + "/model", timeout=10).json()
    assert model["config"]["format"] == "swrr-model-bundle" and "swrr-predict" in model["card"]
    assert model["config"]["calibration"]["temperature"] > 0
    assert requests.get(server.url + "/docs", timeout=10).status_code == 200
    spec = requests.get(server.url + "/openapi.json", timeout=10).json()
    assert "multipart/form-data" in spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and 'id="file"' in page.text
    assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")  # nothing from a CDN


def _float_wav(samples: np.ndarray) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples.astype(np.float32), 16000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def test_bad_input_is_a_4xx_json_error_and_the_next_request_is_served(server, tmp_path):
    wav = DEMO_CLIP.read_bytes()
    long_file = write_wav(tmp_path / "long.wav", seconds=61, sample_rate=8000)  # 61 s, under the 2 MB limit
    cases = [
        (server.post({"file": ("notes.wav", b"this is not audio at all", "audio/wav")}, {"text": "x"}),
         422, ("notes.wav", "not an audio file")),
        (server.post({"file": ("empty.wav", b"", "audio/wav")}, {"text": "x"}), 400, ("empty.wav", "empty")),
        (server.post({"file": ("cut.wav", wav[:40], "audio/wav")}, {"text": "x"}), 422, ("cut.wav",)),
        (server.post({"file": ("nan.wav", _float_wav(np.full(16000, np.nan)), "audio/wav")}, {"text": "x"}),
         422, ("nan.wav", "NaN")),
        (server.post({"file": ("long.wav", long_file.read_bytes(), "audio/wav")}, {"text": "x"}),
         413, ("long.wav", "61 s of audio", "--max-audio-seconds")),
        (server.post({"file": ("big.wav", b"\0" * (3 * 2 ** 20), "audio/wav")}), 413, ("at most 2 MB",)),
        (requests.post(server.url + "/predict", json={"file": "clip.wav"}, timeout=CLIENT_TIMEOUT),
         415, ("multipart/form-data", "application/json")),
        (server.post(None, {"text": "only text"}), 415, ("multipart/form-data",)),  # urlencoded, no file
        (server.post({"text": (None, "x")}), 400, ("missing the 'file' field",)),
        (server.post(clip(), {"text": "x", "lang": "en"}), 400, ("unknown form field", "'lang'")),
        (server.post(clip(), {"text": "x", "abstain_below": "2"}), 400, ("abstain_below", "(0, 1]")),
        (server.post(clip(), {"text": "x", "asr": "true"}), 400, ("without --asr",)),
        (server.post(clip(), {"text": "x", "asr": "maybe"}), 400, ("'asr' must be true or false",)),
        (server.post(clip()), 422, ("no transcript", "'text' field")),
        (requests.get(server.url + "/nothing-here", timeout=10), 404, ("Not Found",)),
    ]
    for response, status, words in cases:
        assert_error(response, status, *words)
    truncated = server.post({"file": ("half.wav", wav[: len(wav) // 2], "audio/wav")}, {"text": "x"})
    assert truncated.status_code in (200, 422)  # soundfile reads what is there, or refuses it: never a crash
    assert server.post(clip(), {"text": DEMO_TEXT}).status_code == 200
    assert requests.get(server.url + "/health", timeout=10).json()["status"] == "ok"
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("swrr-serve-*"))  # every upload deleted


def test_a_concurrent_load_is_micro_batched_and_every_request_is_answered(server):
    wav = DEMO_CLIP.read_bytes()

    def one(i):
        try:
            response = server.post({"file": (f"c{i}.wav", wav, "audio/wav")}, {"text": DEMO_TEXT})
            return response.status_code, response.headers.get("Retry-After"), response.json()
        except requests.RequestException as exc:  # a dropped connection would land here
            return "dropped", None, str(exc)

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(one, range(24)))
    statuses = [a[0] for a in answers]
    print("statuses:", {s: statuses.count(s) for s in set(statuses)})
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 4
    assert all(a[1] for a in answers if a[0] == 503)  # a full queue says when to come back
    sizes = [a[2]["batch_size"] for a in answers if a[0] == 200]
    assert max(sizes) > 1  # uploads that arrived together shared a forward
    probabilities = {json.dumps(a[2]["probabilities"], sort_keys=True) for a in answers if a[0] == 200}
    assert len(probabilities) == 1  # batching does not change the numbers
    assert requests.get(server.url + "/health", timeout=10).json()["status"] == "ok"


def test_a_long_file_answers_its_timeline(server, tmp_path):
    import soundfile as sf

    clips = [sf.read(DEMO / "wav" / name)[0] for name in ("S1M_ang_2.wav", "S1F_ang_3.wav", "S1M_ang_2.wav")]
    rate = sf.info(DEMO / "wav" / "S1M_ang_2.wav").samplerate
    silence = np.zeros(int(1.5 * rate))
    joined = np.concatenate([part for c in clips for part in (c, silence)])
    path = tmp_path / "joined.wav"
    sf.write(path, joined, rate)
    body = server.post(clip(path), {"text": DEMO_TEXT}).json()
    assert len(body["segments"]) >= 3 and body["label"] in body["probabilities"]
    assert all(s["start"] < s["end"] for s in body["segments"])
    assert body["duration"] == pytest.approx(len(joined) / rate, abs=0.01)


@pytest.fixture(scope="module")
def guarded(trained, tmp_path_factory):  # noqa: F811
    log = tmp_path_factory.mktemp("guarded") / "server.log"
    running = Server(trained[0], "--api-key", "s3cret", "--cors", "http://allowed.example",
                     "--request-timeout", "0.001", log=log)
    yield running
    running.stop()


def test_api_key_cors_and_the_time_limit(guarded):
    url = guarded.url
    assert requests.get(url + "/health", timeout=10).status_code == 200  # open for load balancers
    for path in ("/model", "/", "/docs"):
        assert_error(requests.get(url + path, timeout=10), 401, "Authorization: Bearer")
    assert requests.get(url + "/model", headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    key = {"Authorization": "Bearer s3cret"}
    assert requests.get(url + "/model", headers=key, timeout=10).status_code == 200
    assert_error(guarded.post(clip(), {"text": DEMO_TEXT}), 401, "API key")
    assert_error(guarded.post(clip(), {"text": DEMO_TEXT}, headers=key), 504, "--request-timeout")
    preflight = {"Origin": "http://allowed.example", "Access-Control-Request-Method": "POST"}
    allowed = requests.options(url + "/predict", headers=preflight, timeout=10)
    assert allowed.headers.get("access-control-allow-origin") == "http://allowed.example"
    other = requests.get(url + "/health", headers={"Origin": "http://evil.example"}, timeout=10)
    assert "access-control-allow-origin" not in other.headers
    assert requests.get(url + "/health", timeout=10).json()["status"] == "ok"  # still serving


def test_only_localhost_without_a_key_is_quiet():
    from swrr.predict.server import ServeConfig, exposure_warning, json_safe

    assert exposure_warning(ServeConfig(model="m")) is None  # the default host: 127.0.0.1
    assert "without --api-key" in exposure_warning(ServeConfig(model="m", host="0.0.0.0"))
    assert exposure_warning(ServeConfig(model="m", host="0.0.0.0", api_key="k")) is None
    with pytest.raises(Exception, match="--max-queue must be >= 1"):
        ServeConfig(model="m", max_queue=0)
    # /model's JSON: a bundle's NaN metric (e.g. Pearson r of a constant prediction) becomes null
    assert json_safe({"metrics": {"corr": float("nan"), "mae": 0.5}, "x": [float("inf")]}) == \
        {"metrics": {"corr": None, "mae": 0.5}, "x": [None]}


def test_without_cors_no_origin_is_allowed(server):
    response = requests.get(server.url + "/health", headers={"Origin": "http://allowed.example"}, timeout=10)
    assert "access-control-allow-origin" not in response.headers


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_the_page_predicts_an_uploaded_clip_in_a_headless_browser(server, tmp_path):
    browser, driver_path = _chromium(), shutil.which("chromedriver")
    if not browser or not driver_path:
        pytest.skip("no chromium/chromedriver here (Debian: apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        driver.set_page_load_timeout(60)
        driver.get(server.url + "/")
        driver.find_element(By.ID, "file").send_keys(str(DEMO_CLIP))
        driver.find_element(By.ID, "text").send_keys(DEMO_TEXT)
        driver.find_element(By.ID, "submit").click()
        WebDriverWait(driver, CLIENT_TIMEOUT).until(
            lambda d: d.find_element(By.ID, "label").text or d.find_element(By.ID, "error").text)
        assert driver.find_element(By.ID, "error").text == ""
        expected = server.post(clip(), {"text": DEMO_TEXT}).json()
        assert driver.find_element(By.ID, "label").text == expected["label"]
        assert len(driver.find_elements(By.CSS_SELECTOR, "#bars .bar")) == len(expected["probabilities"])
    finally:
        driver.quit()
