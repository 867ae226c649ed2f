"""vitlab-demo and the Space folder: the page's one ``predict`` endpoint answers gradio_client, a
file that is not an image is a message and the page keeps serving, the Space predicts like the
checkpoint with neither torch nor vitlab importable, and a real browser sees the predicted class."""

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
from conftest import FOODS, train_food_checkpoint

from vitlab.checkpoint import load_classifier
from vitlab.export import main as export_main
from vitlab.models.preprocessing import checkpoint_preprocessing
from vitlab.predict import predict_files

pytest.importorskip("gradio", reason="the deploy extra is not installed: pip install -e '.[deploy]'")
pytest.importorskip("onnxruntime", reason="the deploy extra is not installed")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# Imports app.py from the folder argv[1] where torch, torchvision and vitlab cannot be imported, and
# prints its predictions of the files argv[2:] as JSON.
WITHOUT_TORCH = """
import importlib.abc, json, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "torchvision", "vitlab"):
            raise ImportError(f"{name} is not installed here")
sys.meta_path.insert(0, Absent())
sys.path.insert(0, sys.argv[1])
import app
print(json.dumps([app.predict(file) for file in sys.argv[2:]]))
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_food_checkpoint(tmp_path_factory.mktemp("demo"), "preprocessing.crop_pct=0.875")


def food_photos(checkpoint: Path) -> list[Path]:
    return sorted((checkpoint.parents[2] / "images" / "test").rglob("*.jpg"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_space_folder_predicts_like_the_checkpoint_without_torch_or_vitlab(
    checkpoint, run_command, tmp_path
):
    space = tmp_path / "space"
    assert run_command(export_main, f"ckpt_path={checkpoint}", "format=space", f"out={space}") is None
    assert {p.name for p in space.iterdir()} == {"app.py", "requirements.txt", "model.onnx", "examples"}
    assert sorted(p.name for p in (space / "examples").iterdir()) == list(FOODS)
    assert "torch" not in (space / "requirements.txt").read_text()
    files = food_photos(checkpoint)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, str(space), *map(str, files)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    predicted = json.loads(done.stdout.strip().splitlines()[-1])
    module = load_classifier(checkpoint)
    expected = predict_files(module, files, checkpoint_preprocessing(checkpoint, module.hparams))
    for file, theirs, ours in zip(files, predicted, expected, strict=True):
        assert max(theirs, key=theirs.get) == FOODS[int(ours.argmax())], file
        assert [theirs[c] for c in FOODS] == pytest.approx(ours.tolist(), abs=0.01), file


def test_the_predict_endpoint_gives_the_label_and_a_non_image_is_a_message(
    checkpoint, compose_config, tmp_path
):
    from gradio_client import Client, handle_file

    from vitlab.demo import demo_app
    from vitlab.deploy.app import launch

    app, examples = demo_app(compose_config(f"ckpt_path={checkpoint}", config_name="demo"))
    assert len(examples) == 3 * len(FOODS)  # the test split's, three per class
    port = free_port()
    launch(app, examples, port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert [e for e in client.view_api(print_info=False, return_format="dict")["named_endpoints"]] == [
            "/predict"
        ]
        photo = food_photos(checkpoint)[0]
        answer = client.predict(handle_file(str(photo)), api_name="/predict")
        assert answer["label"] in FOODS and len(answer["confidences"]) == 3
        notes = tmp_path / "notes.jpg"
        notes.write_text("not a photo")
        with pytest.raises(Exception, match=r"notes.jpg is not an image this app can read"):
            client.predict(handle_file(str(notes)), api_name="/predict")
        assert client.predict(handle_file(str(photo)), api_name="/predict") == answer  # still serving
    finally:
        app.close()


def wait_for(url: str, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"vitlab-demo exited with {process.returncode}: {process.stdout.read()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    pytest.fail(f"vitlab-demo did not answer at {url} within {seconds} s")


@pytest.mark.slow
def test_a_browser_uploads_a_photo_and_reads_the_predicted_class(checkpoint, tmp_path):
    """Headless Chromium (Debian's chromium and chromium-driver) on ``vitlab-demo``.
    ``VITLAB_DEMO_CKPT`` demos that checkpoint instead, and ``VITLAB_DEMO_SCREENSHOT`` saves the
    page there (docs/results/demo.png is written so)."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("no Chromium: apt-get install chromium chromium-driver (.ci/run does, where it can)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shown = Path(os.environ.get("VITLAB_DEMO_CKPT", checkpoint))
    photo = food_photos(checkpoint)[0] if shown == checkpoint else Path(os.environ["VITLAB_DEMO_PHOTO"])
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "vitlab.demo",
        f"ckpt_path={shown}",
        f"port={port}",
        f"paths.log_dir={tmp_path}",
    ]
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        options.add_argument(argument)
    browser = None
    try:
        wait_for(f"http://127.0.0.1:{port}/", server)
        browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
        browser.get(f"http://127.0.0.1:{port}/")
        upload = WebDriverWait(browser, 60).until(
            lambda b: b.find_element(By.CSS_SELECTOR, "input[type=file]")
        )
        upload.send_keys(str(photo))
        wait = WebDriverWait(browser, 120)
        label = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "[data-testid=label-output-value]").text)
        classes = load_classifier(shown).class_names if shown.suffix == ".ckpt" else FOODS
        assert label in classes
        wait.until(lambda b: "Prediction took" in b.find_element(By.ID, "timing").text)
        if os.environ.get("VITLAB_DEMO_SCREENSHOT"):
            time.sleep(3)  # the rollout, chained after the timing
            browser.save_screenshot(os.environ["VITLAB_DEMO_SCREENSHOT"])
    finally:
        if browser is not None:
            browser.quit()
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp_path / "demo", ignore_errors=True)
