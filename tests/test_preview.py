"""`vsrpp preview`, `--strength` and the plots: real clips, real images read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from harness import run_vsrpp
from media import encode_video, moving_scene, read_frames, write_png
from reference import random_official_checkpoint

from vsrpp_cli.run.pipeline import Options, upscale

WINDOWS = ["--chunk-frames", "4", "--chunk-overlap", "1"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "small.pth"
    torch.save(random_official_checkpoint(8, 1, True, seed=11), path)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return encode_video(tmp_path_factory.mktemp("clip") / "clip.mp4", moving_scene(12, 32, 48))


def upscaled_frames(source: Path, folder: Path, weights: Path, strength: float = 1.0) -> list[np.ndarray]:
    upscale(source, folder, Options(weights, chunk_frames=4, chunk_overlap=1, strength=strength))
    return list(read_frames(folder))


def test_preview_shows_exactly_what_upscale_gives(tmp_path, weights, clip):
    out = tmp_path / "looks"
    args = ["preview", clip, "--weights", weights, "--strength", "1", "--strength", "0.5", "--at", "0.2"]
    result = run_vsrpp(*args, "--at", "0:00.36", *WINDOWS, "--output", out, "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert [m["frame"] for m in facts["moments"]] == [5, 9]
    assert sorted(p.name for p in out.iterdir()) == ["preview-01-00-00-00.png", "preview-02-00-00-00.png"]
    whole = {
        1.0: upscaled_frames(clip, tmp_path / "s1", weights),
        0.5: upscaled_frames(clip, tmp_path / "s05", weights, 0.5),
    }
    for moment in facts["moments"]:
        image = read_frames(Path(moment["image"]))[0]
        assert image.shape == (24 + 128 + 4 + 128, 3 * 192 + 2 * 4, 3)  # label band, panels, zooms
        bicubic, full, half = moment["panels"]
        assert [p["label"] for p in moment["panels"]] == ["bicubic", "small.pth", "small.pth strength 0.5"]
        for panel, strength in ((full, 1.0), (half, 0.5)):
            x, y, w, h = panel["box"]
            assert np.array_equal(image[y : y + h, x : x + w], whole[strength][moment["frame"]])
        x, y, w, h = bicubic["box"]
        assert not np.array_equal(image[y : y + h, x : x + w], whole[1.0][moment["frame"]])
    estimates = facts["estimates"]
    assert [e["setting"] for e in estimates] == ["small.pth", "small.pth strength 0.5"]
    assert all(e["windows"] == 3 and e["whole_video_seconds"] > 0 and e["output_bytes"] > 0 for e in estimates)
    assert estimates[1]["command"].endswith("--strength 0.5 --chunk-frames 4 --chunk-overlap 1")

    told = run_vsrpp("preview", clip, "--weights", weights, *WINDOWS, "--output", tmp_path / "told")
    assert told.returncode == 0, told.stderr
    assert len(told.stdout.split()) == 3  # three moments spread over the video by default
    assert "the whole video in about" in told.stderr and "vsrpp upscale" in told.stderr


def test_strength_blends_with_the_enlarged_source(tmp_path, weights):
    """0: the source enlarged as the network's own skip enlarges it (bilinear x4); 1: the network's
    output bit for bit; between: between."""
    scene = moving_scene(4, 48, 64)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, rgb in enumerate(scene):  # a lossless source: its pixels are known exactly
        write_png(frames / f"{i}.png", rgb)
    zero = upscaled_frames(frames, tmp_path / "s0", weights, 0.0)
    x = torch.from_numpy(scene).permute(0, 3, 1, 2).float() / 255
    bilinear = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    expected = (bilinear.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.array_equal(np.stack(zero), expected)
    one = upscaled_frames(frames, tmp_path / "s1", weights, 1.0)
    upscale(frames, tmp_path / "default", Options(weights, chunk_frames=8, chunk_overlap=2))
    default = list(read_frames(tmp_path / "default"))
    assert all(np.array_equal(a, b) for a, b in zip(one, default, strict=True))
    half = upscaled_frames(frames, tmp_path / "s05", weights, 0.5)
    middle = (np.stack(zero).astype(int) + np.stack(one)) / 2
    inside = (np.stack(one) > 0) & (np.stack(one) < 255)  # where the network's output was not clamped
    assert np.abs(np.stack(half) - middle)[inside].max() <= 1  # rounding apart, halfway
    assert run_vsrpp("upscale", frames, tmp_path / "x", "--weights", weights, "--strength", "1.5").returncode == 2


def test_eval_and_bench_draw_plots(tmp_path, weights):
    lq, gt = tmp_path / "lq" / "a", tmp_path / "gt" / "a"
    lq.mkdir(parents=True)
    gt.mkdir(parents=True)
    scene = moving_scene(4, 64, 96)
    small = F.interpolate(torch.from_numpy(scene).permute(0, 3, 1, 2).float(), scale_factor=0.25, mode="area")
    for i, (big, little) in enumerate(zip(scene, small.round().byte().permute(0, 2, 3, 1).numpy(), strict=True)):
        for folder, rgb in ((gt, big), (lq, little)):
            write_png(folder / f"{i:03d}.png", rgb)
    plot = tmp_path / "psnr.png"
    args = ["eval", "--lq", lq.parent, "--gt", gt.parent, "--weights", weights, "--plot", plot, "--json", "-q"]
    result = run_vsrpp(*args)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["clips"][0]["frame_psnrs"]) == 4
    assert read_frames(plot)[0].shape[2] == 3 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    chart = tmp_path / "fps.png"
    bench = run_vsrpp(
        "bench",
        "--size",
        "32x40",
        "--frames",
        "2",
        "--repeat",
        "1",
        "--device",
        "cpu",
        "--no-pipeline",
        "--plot",
        chart,
    )
    assert bench.returncode == 0, bench.stderr
    assert read_frames(chart)[0].shape[0] > 100
    assert run_vsrpp("bench", "--plot", tmp_path / "fps.svg").returncode == 2


def test_preview_bad_input_is_one_line_and_writes_nothing(tmp_path, weights, clip):
    cases = [
        (["--at", "00:10:00"], "--at 00:10:00 is past the end of clip.mp4 (0.48 s long)", 2),
        (["--at", "soon"], "--at soon: give a time as SECONDS", 2),
        (["--strength", "2"], "--strength 2.0: give a value from 0 to 1", 2),
    ]
    for extra, message, status in cases:
        result = run_vsrpp("preview", clip, "--weights", weights, "--output", tmp_path / "p", *extra)
        assert result.returncode == status and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    unreadable = run_vsrpp("preview", text, "--weights", weights, "--output", tmp_path / "p")
    assert unreadable.returncode == 1 and "not a video FFmpeg can read" in unreadable.stderr
    assert not (tmp_path / "p").exists()
    blocked = run_vsrpp(
        "preview", clip, "--weights", weights, "--at", "0.2", *WINDOWS, "--output", "/sys/vsrpp-preview"
    )
    assert blocked.returncode == 1 and "no permission" in blocked.stderr, blocked.stderr


def test_a_label_stays_inside_its_panel():
    """A label longer than its panel is drawn smaller and clipped at the panel's edge, never over
    the next panel (small previews had their labels run into each other)."""
    from vsrpp_cli.quality.labels import draw_text

    image = np.zeros((20, 200, 3), np.uint8)
    draw_text(image, "BICUBIC  HELD-OUT.MP4 00:00:05.2", 2, 4, width=92)
    assert image[:, 96:].max() == 0  # the neighbour's band untouched
    assert image[:, 4:96].max() == 255 and not image[2 + 8 :].any()  # drawn at half size: 8 rows, not 16
    fits = np.zeros((20, 200, 3), np.uint8)
    draw_text(fits, "REDS4", 2, 4, width=92)
    drawn = np.argwhere(fits[..., 0])
    assert drawn[:, 0].max() - drawn[:, 0].min() + 1 > 8  # a label that fits keeps its full size
