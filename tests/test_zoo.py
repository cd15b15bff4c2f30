"""The model zoo against a real HTTP server on localhost."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import socket
import threading
from pathlib import Path

import pytest
import torch
from harness import run_vsrpp
from media import encode_video, moving_scene
from reference import random_official_checkpoint

from vsrpp_cli.weights import zoo


class Handler(http.server.SimpleHTTPRequestHandler):
    truncate = False  # send the full Content-Length header but only half of the body

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.truncate else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/served over HTTP on localhost; yields (base URL, folder, handler class)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = type("TestHandler", (Handler,), {})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/", folder, handler
    httpd.shutdown()


@pytest.fixture
def tiny_model(tmp_path, server):
    """A small checkpoint of our own, named with its sha256 prefix and registered in a test manifest."""
    url, folder, _ = server
    staging = tmp_path / "tiny.pth"
    torch.save(random_official_checkpoint(8, 1, True, seed=9), staging)
    prefix = hashlib.sha256(staging.read_bytes()).hexdigest()[:8]
    name = f"tiny-{prefix}.pth"
    staging.rename(folder / name)
    manifest = tmp_path / "models.json"
    entry = {
        "name": "tiny",
        "file": name,
        "mid_channels": 8,
        "num_blocks": 1,
        "scale": 4,
        "task": "test",
        "trained_on": "nothing",
        "base_url": url,
    }
    manifest.write_text(json.dumps([entry]))
    env = {**os.environ, "VSRPP_HOME": str(tmp_path / "home"), "VSRPP_MODELS": str(manifest)}
    env.pop("VSRPP_WEIGHTS_URL", None)
    return env, folder / name, tmp_path / "home" / "weights" / name


def vsrpp(env, *args):
    """The command in this process, under `env` (the zoo reads its variables when called)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return run_vsrpp(*args)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_list_has_all_ten_official_models(monkeypatch):
    monkeypatch.delenv("VSRPP_MODELS", raising=False)
    names = list(zoo.models())
    assert names == [
        "reds4",
        "vimeo90k-bi",
        "vimeo90k-bd",
        "ntire-vsr",
        "ntire-decompress-track1",
        "ntire-decompress-track2",
        "ntire-decompress-track3",
        "deblur-dvd",
        "deblur-gopro",
        "denoise",
    ]
    for model in zoo.models().values():
        assert model.file.endswith(f"-{model.sha256_prefix}.pth")
    assert zoo.parameter_count(zoo.get("reds4")) == 7_322_927
    for model in zoo.models().values():  # the table behind `weights list` is the networks' own count
        assert zoo.parameter_count(model) == zoo.counted_parameters(model), model.name
    listed = json.loads(vsrpp(os.environ, "weights", "list", "--json").stdout)
    assert [m["name"] for m in listed] == names


def test_download_verify_and_path(tiny_model):
    env, served, local = tiny_model
    result = vsrpp(env, "weights", "download", "tiny", "-q")
    assert result.returncode == 0, result.stderr
    assert local.read_bytes() == served.read_bytes()
    assert os.listdir(local.parent) == [local.name]  # nothing else: no partial file
    assert vsrpp(env, "weights", "path", "tiny").stdout.strip() == str(local)
    verify = vsrpp(env, "weights", "verify")
    assert verify.returncode == 0 and "tiny: ok" in verify.stdout
    listed = {m["name"]: m for m in json.loads(vsrpp(env, "weights", "list", "--json").stdout)}
    assert listed["tiny"]["downloaded"] and not listed["reds4"]["downloaded"]


def test_wrong_file_under_an_official_name_is_refused(tmp_path, server):
    url, folder, _ = server
    model = zoo.get("reds4")
    (folder / model.file).write_bytes(b"not the checkpoint")
    env = {**os.environ, "VSRPP_HOME": str(tmp_path / "home"), "VSRPP_WEIGHTS_URL": url}
    result = vsrpp(env, "weights", "download", "reds4", "-q")
    assert result.returncode == 1
    assert "does not match the checksum" in result.stderr and "Traceback" not in result.stderr
    weights = tmp_path / "home" / "weights"
    assert not weights.exists() or not any(weights.iterdir())  # nothing left behind


def test_server_down_says_exactly_what_to_do(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VSRPP_HOME": str(tmp_path / "home"), "VSRPP_WEIGHTS_URL": f"http://127.0.0.1:{port}/"}
    video = encode_video(tmp_path / "in.mp4", moving_scene(2, 48, 64))
    result = vsrpp(env, "upscale", str(video), str(tmp_path / "out.mp4"))  # the default model, reds4
    model = zoo.get("reds4")
    expected_path = tmp_path / "home" / "weights" / model.file
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"http://127.0.0.1:{port}/{model.file}" in result.stderr
    assert f"place the file at {expected_path}" in result.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_interrupted_transfer_leaves_nothing(tiny_model, server):
    env, _, local = tiny_model
    server[2].truncate = True
    result = vsrpp(env, "weights", "download", "tiny", "-q")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert not local.parent.exists() or not any(local.parent.iterdir())


def test_corrupt_cached_file_is_fetched_again_and_model_used_by_upscale(tmp_path, tiny_model):
    env, served, local = tiny_model
    local.parent.mkdir(parents=True)
    local.write_bytes(b"damaged")
    video = encode_video(tmp_path / "in.mp4", moving_scene(3, 48, 64))
    result = vsrpp(env, "upscale", str(video), str(tmp_path / "out.mp4"), "--model", "tiny", "--json", "-q")
    assert result.returncode == 0, result.stderr
    assert local.read_bytes() == served.read_bytes()
    assert json.loads(result.stdout)["frames"] == 3
    assert vsrpp(env, "weights", "verify").returncode == 0

    local.write_bytes(b"damaged again")
    verify = vsrpp(env, "weights", "verify")
    assert verify.returncode == 1 and "tiny: DAMAGED" in verify.stdout


def test_weights_path_skips_the_zoo(tmp_path):
    weights = tmp_path / "local.pth"
    torch.save(random_official_checkpoint(8, 1, True), weights)
    env = {**os.environ, "VSRPP_HOME": str(tmp_path / "home"), "VSRPP_WEIGHTS_URL": "http://127.0.0.1:9/"}
    video = encode_video(tmp_path / "in.mp4", moving_scene(2, 48, 64))
    result = vsrpp(env, "upscale", str(video), str(tmp_path / "out.mp4"), "--weights", str(weights), "-q")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "home").exists()


def test_models_by_hand_say_where_to_get_them(tmp_path):
    env = {**os.environ, "VSRPP_HOME": str(tmp_path / "home")}
    env.pop("VSRPP_WEIGHTS_URL", None)
    result = vsrpp(env, "weights", "download", "denoise")
    assert result.returncode == 1
    assert "not on the OpenMMLab download host" in result.stderr and "dropbox.com" in result.stderr
    assert str(tmp_path / "home" / "weights" / zoo.get("denoise").file) in result.stderr


def test_weights_folder_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("VSRPP_HOME", str(tmp_path))
    assert zoo.weights_dir() == tmp_path / "weights"
    monkeypatch.delenv("VSRPP_HOME")
    assert zoo.weights_dir() == Path(zoo.__file__).resolve().parents[2] / "weights"  # a checkout
