"""`vsrpp eval` and its metrics against independent computations of the protocol."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from harness import run_vsrpp
from media import moving_scene
from numpy.lib.stride_tricks import sliding_window_view
from reference import random_official_checkpoint

from vsrpp_cli import load_model
from vsrpp_cli.quality.metrics import psnr, ssim


# ----------------------------------------------------------------------------- independent metrics
def naive_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM straight from Wang et al. (2004): every 11x11 window that fits, Gaussian-weighted
    (each moment summed over the window itself, not by a filter as metrics.py does)."""
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def mean(*windows: np.ndarray) -> np.ndarray:  # the weighted mean of a product over each window
        return np.einsum("ijkl," * len(windows) + "kl->ij", *windows, w)

    values = []
    for ch in range(a.shape[2]):
        pa = sliding_window_view(a[..., ch].astype(np.float64), (11, 11))
        pb = sliding_window_view(b[..., ch].astype(np.float64), (11, 11))
        mu_a, mu_b = mean(pa), mean(pb)
        var_a, var_b, cov = mean(pa, pa) - mu_a**2, mean(pb, pb) - mu_b**2, mean(pa, pb) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        values.append(s.mean())
    return float(np.mean(values))


def naive_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(255**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def y_of(rgb: np.ndarray) -> np.ndarray:  # BT.601 luma, 16-235, as the papers compute it
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return (16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255)[..., None]


def test_psnr_known_values():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255), abs=1e-12)
    gray_gap = 10 * 219 / 255  # two grays 10 apart differ by this much in luma
    assert psnr(a, a + 10, y_channel=True) == pytest.approx(20 * math.log10(255 / gray_gap), abs=1e-9)
    assert psnr(a, a) == math.inf


def test_ssim_known_values():
    flat_a, flat_b = np.full((16, 16, 3), 100, np.uint8), np.full((16, 16, 3), 110, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ssim(flat_a, flat_b) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), abs=1e-12)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 27, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 30, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, b) == pytest.approx(naive_ssim(a, b), abs=1e-10)
    assert ssim(a, b, y_channel=True) == pytest.approx(naive_ssim(y_of(a), y_of(b)), abs=1e-10)


# ----------------------------------------------------------------------------- data trees
def write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.height, stream.width = rgb.shape[:2]
        stream.pix_fmt = "rgb24"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


def read_png(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def downsample(gt: np.ndarray) -> np.ndarray:
    """x4 by 4x4 averages: a stand-in for the datasets' bicubic degradation."""
    h, w = gt.shape[0] // 4, gt.shape[1] // 4
    return gt.reshape(h, 4, w, 4, 3).mean((1, 3)).round().astype(np.uint8)


def make_clip(lq_dir: Path, gt_dir: Path, frames: int, seed: int, names=None) -> None:
    scene = moving_scene(frames, 128, 128, seed=seed)
    for i, gt in enumerate(scene):
        name = names[i] if names else f"{i:08d}.png"
        write_png(gt_dir / name, gt)
        write_png(lq_dir / name, downsample(gt))


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "tiny.pth"
    torch.save(random_official_checkpoint(8, 1, True, seed=11), path)
    return path


@pytest.fixture(scope="module")
def reds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("REDS")
    for seed, clip in enumerate(("000", "011", "015", "020")):
        make_clip(root / "train_sharp_bicubic" / "X4" / clip, root / "train_sharp" / clip, 3, seed)
    make_clip(root / "train_sharp_bicubic" / "X4" / "001", root / "train_sharp" / "001", 2, 9)  # not in REDS4
    return root


def vsrpp(*args: str):
    return run_vsrpp(*args)


def independent_scores(weights: Path, lq_dir: Path, gt_dir: Path, y: bool = False) -> tuple[float, float]:
    """The protocol by hand: the clip as one sequence, clamp, round to 8 bits, mean over frames."""
    names = sorted(p.name for p in lq_dir.iterdir())
    lq = np.stack([read_png(lq_dir / n) for n in names])
    clip = torch.from_numpy(lq).permute(0, 3, 1, 2).float().div(255)[None]
    with torch.no_grad():
        out = load_model(weights)(clip)[0]
    frames = (out.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    gts = [read_png(gt_dir / n) for n in names]
    prep = y_of if y else (lambda image: image)
    p = np.mean([naive_psnr(prep(o), prep(g)) for o, g in zip(frames, gts, strict=True)])
    s = np.mean([naive_ssim(prep(o), prep(g)) for o, g in zip(frames, gts, strict=True)])
    return float(p), float(s)


# ----------------------------------------------------------------------------- the command
def test_reds4_matches_an_independent_computation(tmp_path, reds, weights):
    csv = tmp_path / "scores.csv"
    result = vsrpp(
        "eval",
        "--dataset",
        "REDS4",
        "--data-root",
        str(reds),
        "--weights",
        str(weights),
        "--json",
        "--report",
        str(csv),
        "-q",
    )
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert [c["clip"] for c in facts["clips"]] == ["000", "011", "015", "020"]  # 001 is not in REDS4
    assert facts["channel"] == "RGB"
    for clip in facts["clips"]:
        want_psnr, want_ssim = independent_scores(
            weights, reds / "train_sharp_bicubic" / "X4" / clip["clip"], reds / "train_sharp" / clip["clip"]
        )
        assert clip["frames"] == 3
        assert clip["psnr"] == pytest.approx(want_psnr, abs=0.01)
        assert clip["ssim"] == pytest.approx(want_ssim, abs=1e-4)
    assert facts["psnr"] == pytest.approx(np.mean([c["psnr"] for c in facts["clips"]]), abs=1e-9)
    assert csv.read_text().splitlines()[0] == "clip,frames,psnr,ssim" and len(csv.read_text().splitlines()) == 5


def test_windows_and_tiles_cost_is_measurable(tmp_path, weights):
    make_clip(tmp_path / "lq" / "a", tmp_path / "gt" / "a", 3, 5)
    pair = ["--lq", tmp_path / "lq", "--gt", tmp_path / "gt", "--weights", weights, "--json", "-q"]
    whole = vsrpp("eval", *pair)
    tiled = vsrpp("eval", *pair, "--tile", "16", "--tile-overlap", "4", "--chunk-frames", "1")
    assert whole.returncode == tiled.returncode == 0, whole.stderr + tiled.stderr
    assert json.loads(tiled.stdout)["psnr"] != json.loads(whole.stdout)["psnr"]


def test_vimeo_scores_the_mirrored_centre_frame(tmp_path, weights):
    root = tmp_path / "vimeo90k"
    names = [f"im{i}.png" for i in range(1, 8)]
    make_clip(root / "BIx4" / "00001" / "0001", root / "GT" / "00001" / "0001", 7, 3, names)
    (root / "meta_info_Vimeo90K_test_GT.txt").write_text("00001/0001 (128,128,3)\n")
    result = vsrpp(
        "eval", "--dataset", "Vimeo-90K-T-BI", "--data-root", str(root), "--weights", str(weights), "--json", "-q"
    )
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["channel"] == "Y" and facts["clips"][0]["frames"] == 1

    lq = np.stack([read_png(root / "BIx4" / "00001" / "0001" / n) for n in names])
    clip = torch.from_numpy(np.concatenate([lq, lq[::-1]])).permute(0, 3, 1, 2).float().div(255)[None]
    with torch.no_grad():
        out = load_model(weights)(clip)[0]
    centre = (0.5 * (out[3] + out[10])).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    gt = read_png(root / "GT" / "00001" / "0001" / "im4.png")
    assert facts["psnr"] == pytest.approx(naive_psnr(y_of(centre), y_of(gt)), abs=0.01)
    assert facts["ssim"] == pytest.approx(naive_ssim(y_of(centre), y_of(gt)), abs=1e-4)


def test_paired_folders_on_y(tmp_path, weights):
    make_clip(tmp_path / "lq" / "a", tmp_path / "gt" / "a", 2, 4)
    result = vsrpp(
        "eval",
        "--lq",
        str(tmp_path / "lq"),
        "--gt",
        str(tmp_path / "gt"),
        "--y-channel",
        "--weights",
        str(weights),
        "--json",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    want_psnr, want_ssim = independent_scores(weights, tmp_path / "lq" / "a", tmp_path / "gt" / "a", y=True)
    facts = json.loads(result.stdout)
    assert facts["psnr"] == pytest.approx(want_psnr, abs=0.01)
    assert facts["ssim"] == pytest.approx(want_ssim, abs=1e-4)


def test_missing_data_is_named(tmp_path, reds, weights):
    result = vsrpp("eval", "--dataset", "REDS4", "--data-root", str(tmp_path / "nothing"), "--weights", str(weights))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "REDS4 needs" in result.stderr and "train_sharp_bicubic" in result.stderr

    partial = tmp_path / "REDS"
    make_clip(partial / "train_sharp_bicubic" / "X4" / "000", partial / "train_sharp" / "000", 1, 0)
    result = vsrpp("eval", "--dataset", "REDS4", "--data-root", str(partial), "--weights", str(weights))
    assert result.returncode == 1 and "011" in result.stderr

    result = vsrpp("eval", "--dataset", "Set5", "--weights", str(weights))
    assert result.returncode == 2 and "'Set5' is not one of 'reds4'" in result.stderr


def test_published_number_beside_ours(tmp_path, reds, weights, monkeypatch):
    import hashlib

    prefix = hashlib.sha256(weights.read_bytes()).hexdigest()[:8]
    manifest = tmp_path / "models.json"
    manifest.write_text(
        json.dumps(
            [
                {
                    "name": "tiny",
                    "file": f"tiny-{prefix}.pth",
                    "mid_channels": 8,
                    "num_blocks": 1,
                    "scale": 4,
                    "task": "test",
                    "trained_on": "nothing",
                    "scores": {"REDS4": "30.0000/0.8000"},
                }
            ]
        )
    )
    monkeypatch.setenv("VSRPP_MODELS", str(manifest))
    result = vsrpp("eval", "--dataset", "REDS4", "--data-root", str(reds), "--weights", str(weights), "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["zoo_model"] == "tiny" and facts["published_psnr"] == 30.0
    assert facts["psnr_difference"] == pytest.approx(facts["psnr"] - 30.0)
    assert "published (tiny)" in result.stderr and "difference" in result.stderr


def test_the_deform_backend_is_chosen_and_reported(tmp_path, weights):
    """--deform-backend on eval: the kernel asked for is the one used (in the facts), and the
    plain per-tap baseline scores as the default torch kernel does."""
    make_clip(tmp_path / "lq" / "a", tmp_path / "gt" / "a", 2, 4)
    scores = {}
    for backend in ("torch", "plain"):
        result = vsrpp("eval", "--lq", str(tmp_path / "lq"), "--gt", str(tmp_path / "gt"), "--weights", str(weights),
                       "--device", "cpu", "--deform-backend", backend, "--json", "-q")  # fmt: skip
        assert result.returncode == 0, result.stderr
        facts = json.loads(result.stdout)
        assert facts["deform_backend"] == backend
        scores[backend] = (facts["psnr"], facts["ssim"])
    assert scores["plain"] == pytest.approx(scores["torch"], abs=1e-4)
