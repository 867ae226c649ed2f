"""Each user error, typed as a user would: one message naming the problem and the fix, a non-zero
exit, no traceback, and no run folder left that a later command could take for an interrupted run."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN

from vitlab.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
PROXIES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy")


@pytest.fixture
def fails_with_one_message(
    tmp_path: Path, run_command, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., str]:
    """``fails_with_one_message(*overrides, env=...)``: run the train command in this process; assert
    it stopped with one line (``error: ...``, no exception escaping) and left no run folder."""

    def fails(*overrides: str, env: dict[str, str] | None = None) -> str:
        for proxy in PROXIES:
            monkeypatch.delenv(proxy, raising=False)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        code = run_command(train_main, *overrides, f"paths.log_dir={tmp_path / 'logs'}")
        assert isinstance(code, str) and code.startswith("error: "), code
        assert "\n" not in code, code
        runs = tmp_path / "logs" / "train" / "runs"
        assert not runs.exists() or not any(runs.iterdir()), "a run folder was left behind"
        return code

    return fails


class Handler(SimpleHTTPRequestHandler):
    """Serves the folder; ``/truncated.zip`` promises more bytes than it sends, then hangs up."""

    def do_GET(self) -> None:
        if self.path != "/truncated.zip":
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"PK\x03\x04 only the start of a zip")
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path) -> Iterator[tuple[Path, str]]:
    folder = tmp_path / "www"
    folder.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    import socket

    with socket.socket() as probe:  # a port nothing listens on: connection refused, as without network
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_network_for_the_dataset_says_where_to_put_a_copy(tmp_path, fails_with_one_message):
    root = tmp_path / "data" / "pizza_steak_sushi"
    message = fails_with_one_message(
        f"data.root={root}", f"data.url=http://127.0.0.1:{closed_port()}/pizza_steak_sushi.zip"
    )
    assert "(data.url) failed" in message and f"{root}/train" in message and "VITLAB_DATA_DIR" in message
    assert not root.exists()


def test_a_checksum_mismatch_names_the_expected_and_the_found_digest(
    tmp_path, server, fails_with_one_message
):
    www, url = server
    (www / "data.zip").write_bytes(b"not the dataset")
    message = fails_with_one_message(
        f"data.root={tmp_path / 'd'}", f"data.url={url}/data.zip", "data.sha256=" + "0" * 64
    )
    assert "SHA-256 of" in message and "expected " + "0" * 64 in message and "data.sha256=" in message


def test_a_truncated_download_is_reported_as_incomplete(tmp_path, server, fails_with_one_message):
    _, url = server
    message = fails_with_one_message(f"data.root={tmp_path / 'd'}", f"data.url={url}/truncated.zip")
    assert "truncated.zip is" in message and "corrupt or incomplete" in message
    assert not (tmp_path / "d").exists()


def test_a_folder_of_loose_images_is_not_downloaded_into_and_the_layout_is_explained(
    tmp_path, fails_with_one_message
):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"\xff\xd8")
    message = fails_with_one_message(f"data.root={photos}")  # the default data: FoodVision
    assert "holds files but no train/ folder" in message and f"{photos}/train/<class>/<image>" in message
    assert sorted(p.name for p in photos.iterdir()) == ["a.jpg"]


def test_finetuning_without_network_names_the_weights_file_and_the_offline_option(
    tmp_path, make_image_folder, fails_with_one_message
):
    root = make_image_folder(n_per_class=1)
    message = fails_with_one_message(
        "experiment=foodvision_finetune",
        f"data.root={root}",
        "logger=csv",
        env={"https_proxy": f"http://127.0.0.1:{closed_port()}", "TORCH_HOME": str(tmp_path / "torch")},
    )
    assert "https://download.pytorch.org/models/vit_b_16-c867db91.pth" in message
    fix = (
        "model.pretrained=torchvision:ViT_B_16_Weights.IMAGENET1K_V1 model.pretrained_file=/path/to/vit_b_16"
    )
    assert fix in message


def test_a_misspelled_key_suggests_the_closest_valid_name(tmp_path, fails_with_one_message):
    message = fails_with_one_message("trainer.max_epoch=1")
    assert message.startswith("error: trainer.max_epoch is not an option: did you mean trainer.max_epochs?")


def test_an_added_misspelled_key_fails_before_seeding_logging_or_data(tmp_path, fails_with_one_message):
    message = fails_with_one_message(
        "+trainer.max_epoch=1", "data=imagefolder", f"data.root={tmp_path / 'absent'}"
    )
    assert "trainer.max_epoch is not an option of lightning.pytorch.Trainer" in message
    assert "did you mean trainer.max_epochs?" in message


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only output")
def test_a_run_prints_no_known_harmless_noise_and_counts_its_flops(tmp_path):
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        *TINY_RUN,
        "logger=[csv,wandb]",  # the default loggers and summary table, which the tiny run leaves out
        "callbacks.model_summary.max_depth=1",
        "test=false",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    for noise in ("No CUDA runtime is found", "💡 Tip", "anonymous setting"):
        assert noise not in output
    assert "Total FLOPs: 0" not in output and "Total FLOPs" in output
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert f"output_dir: {run}" in result.stdout  # a long line, not cut at 80 columns in a pipe
