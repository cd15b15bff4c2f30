"""`vsrpp train` with real torch.distributed processes (gloo, 2 on the CPU) on a tiny REDS tree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from harness import run_vsrpp
from media import encode_video, moving_scene
from test_eval import downsample, write_png

from vsrpp_cli import read_checkpoint
from vsrpp_cli.network import SPyNet
from vsrpp_cli.run.engine import slow_on_this_cpu
from vsrpp_cli.run.threads import threads_per_process
from vsrpp_cli.train.config import TrainConfig

# C8/N1 with its full-size convs 8 wide (64 upstream: half of a small network's time), from a
# config file as a user gives settings without a flag.
NETWORK = "network.json"


@pytest.fixture(scope="module")
def reds(tmp_path_factory) -> Path:
    """REDS layout; the low-resolution side is darker than the GT, a gap a net can learn fast.
    Frames of 128x128 trained in whole-frame crops (--patch-size 128): a quarter of the recipe's
    256 crops' arithmetic, the same code. The validation clips (REDS4's names) hold 2 frames: a
    validation is a third of a run's time at 4."""
    root = tmp_path_factory.mktemp("REDS")
    for seed, clip in enumerate(("000", "011", "015", "020", "001", "002")):
        frames = 2 if clip in TrainConfig().val_clips else 4
        for i, gt in enumerate(moving_scene(frames, 128, 128, seed=seed)):
            write_png(root / "train_sharp" / clip / f"{i:08d}.png", gt)
            write_png(
                root / "train_sharp_bicubic" / "X4" / clip / f"{i:08d}.png", (downsample(gt) * 0.7).astype(np.uint8)
            )
    return root


@pytest.fixture(scope="module")
def spynet(tmp_path_factory) -> Path:
    """SPyNet's weights, and beside them the small network trained here (NETWORK)."""
    path = tmp_path_factory.mktemp("spynet") / "spynet.pth"
    torch.manual_seed(0)
    torch.save({"state_dict": SPyNet().state_dict()}, path)
    path.with_name(NETWORK).write_text(json.dumps({"mid_channels": 8, "num_blocks": 1, "hr_channels": 8}))
    return path



def train_args(reds: Path, spynet: Path, work_dir: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data-root",
        str(reds),
        "--work-dir",
        str(work_dir),
        "--device",
        "cpu",
        "--nproc-per-node",
        "2",
        "--num-frames",
        "3",
        "--config",
        str(spynet.with_name(NETWORK)),
        "--workers",
        "0",
        "--log-interval",
        "1",
        "--spynet",
        str(spynet),
        "--patch-size",
        "128",
        *extra,
    ]


def train(reds: Path, spynet: Path, work_dir: Path, *extra: str):
    """`vsrpp train` run here (its workers are processes all the same: forked by the fork server,
    with this process's environment), with no OMP_NUM_THREADS: each worker takes its share."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("OMP_NUM_THREADS", raising=False)
        return run_vsrpp(*train_args(reds, spynet, work_dir, *extra))


def losses(work_dir: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (work_dir / "train_log.jsonl").read_text().splitlines()]
    return [(r["iter"], r["loss"]) for r in records if "loss" in r]


# lr 2e-3 so that 6 iterations show learning; validated and saved half-way and at the end.
RECIPE = ("--iters", "6", "--lr", "2e-3", "--fix-iter", "2", "--val-interval", "3", "--save-interval", "3")


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, reds: Path, spynet: Path) -> Path:
    """One uninterrupted run on 2 processes: what the first test reads and the second resumes to."""
    run = tmp_path_factory.mktemp("whole") / "run"
    result = train(reds, spynet, run, *RECIPE)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def test_two_processes_learn_and_write_official_checkpoints(tmp_path, whole_run):
    run = whole_run
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert all(r["world_size"] == 2 for r in records)
    # No OMP_NUM_THREADS: each of the 2 processes takes its half of the cores, not all of them.
    assert {r["torch_threads"] for r in records} == {threads_per_process(2)}
    assert all({"iter", "loss", "lr"} <= set(r) for r in records if "val_psnr" not in r)
    curve = [loss for _, loss in losses(run)]
    assert len(curve) == 6
    assert np.mean(curve[-2:]) < 0.8 * np.mean(curve[:2])  # it learns (0.68 here: 0.108 from 0.160)
    assert [r["iter"] for r in records if "val_psnr" in r] == [3, 6]
    assert {p.name for p in run.iterdir()} >= {
        "iter_3.pth",
        "iter_6.pth",
        "latest.pth",
        "best.pth",
        "latest.state.pth",
        "config.json",
        "train_log.jsonl",
    }
    config = json.loads((run / "config.json").read_text())
    assert config["iters"] == 6 and config["betas"] == [0.9, 0.99] and config["patch_size"] == 128
    assert TrainConfig().patch_size == 256  # the recipe's, where --patch-size is not given

    checkpoint = torch.load(run / "latest.pth", weights_only=True)  # the official layout
    assert set(checkpoint) == {"meta", "state_dict"}
    assert checkpoint["state_dict"]["step_counter"].tolist() == [6.0]
    assert all(k.startswith("generator.") for k in checkpoint["state_dict"] if k != "step_counter")

    video = encode_video(tmp_path / "in.mp4", moving_scene(3, 48, 64))
    upscaled = run_vsrpp("upscale", video, tmp_path / "out.mp4", "--weights", run / "latest.pth", "-q")
    assert upscaled.returncode == 0, upscaled.stderr


def test_resumed_run_continues_the_same_curve(tmp_path, reds, spynet, whole_run):
    """Stopped at a validation and a save, then resumed: the curve of the run never stopped."""
    parts = tmp_path / "parts"
    first = train(reds, spynet, parts, *RECIPE, "--stop-after", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert [i for i, _ in losses(parts)] == [1, 2, 3]
    again = run_vsrpp(*train_args(reds, spynet, parts, *RECIPE))  # refused before any process starts
    assert again.returncode == 1 and "--resume" in again.stderr
    second = train(reds, spynet, parts, *RECIPE, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert losses(parts) == losses(whole_run)  # to the last bit


def test_broken_data_root_fails_clearly(tmp_path, reds, spynet):
    result = train(tmp_path / "nothing", spynet, tmp_path / "run", "--iters", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "train_sharp" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_slow_mixed_precision_on_this_cpu_is_said_first(tmp_path, spynet):
    """--amp bf16 on a CPU without a fast bf16 convolution: every step would take PyTorch's
    reference kernel (47x fp32 on a 2-core EPYC), so that is said before anything else; the
    data's error follows as its one line. Where the CPU has the kernels, nothing is said."""
    result = train(tmp_path / "nothing", spynet, tmp_path / "run", "--iters", "1", "--amp", "bf16")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "train_sharp" in lines[-1]
    slow = slow_on_this_cpu(torch.bfloat16)
    assert len(lines) == (2 if slow else 1)
    assert not slow or ("bf16 on this CPU is 40-90x slower than fp32" in lines[0] and "--amp off" in lines[0])


def test_config_file_values_hold_unless_a_flag_is_given(tmp_path):
    """The file's data_root, work_dir and device are used when no flag says otherwise (they were
    once overridden by the flags' defaults); a flag given wins over the file."""
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"data_root": str(tmp_path / "from-file"), "work_dir": str(tmp_path / "runs")}))
    from_file = run_vsrpp("train", "--config", config, "--iters", "1")
    assert from_file.returncode == 1 and "from-file" in from_file.stderr, from_file.stderr
    flagged = run_vsrpp("train", "--config", config, "--data-root", tmp_path / "from-flag")
    assert flagged.returncode == 1 and "from-flag" in flagged.stderr and "from-file" not in flagged.stderr

    config.write_text(json.dumps({"device": "cpu", "iters": 7, "lr": 0.5}))
    settings = TrainConfig.from_sources(config, {"iters": 9, "lr": None, "device": None})
    assert (settings.device, settings.iters, settings.lr, settings.work_dir) == ("cpu", 9, 0.5, "runs/reds4")


def test_finetune_on_own_videos(tmp_path, spynet):
    from reference import random_official_checkpoint

    start = tmp_path / "start.pth"
    torch.save(random_official_checkpoint(8, 1, True, seed=3), start)
    videos = tmp_path / "videos"
    videos.mkdir()
    encode_video(videos / "holiday.mp4", moving_scene(6, 128, 128))
    run = tmp_path / "run"
    args = [
        "finetune",
        "--from",
        str(start),
        "--data",
        str(videos),
        "--work-dir",
        str(run),
        "--device",
        "cpu",
        "--nproc-per-node",
        "1",
        "--iters",
        "3",
        "--num-frames",
        "3",
        "--patch-size",
        "128",
        "--workers",
        "0",
        "--log-interval",
        "1",
        "--save-interval",
        "3",
        "--degradation",
        "blur",
    ]
    result = run_vsrpp(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((run / "frames" / "holiday").iterdir())) == 6  # decoded once
    assert [i for i, _ in losses(run)] == [1, 2, 3]
    config = json.loads((run / "config.json").read_text())
    assert config["init_from"] == str(start) and config["degradation"] == "blur" and config["fix_iter"] == 0
    tuned, original = read_checkpoint(run / "latest.pth").state_dict, read_checkpoint(start).state_dict
    assert not torch.equal(tuned["conv_last.weight"], original["conv_last.weight"])  # it moved from the start


@pytest.mark.parametrize("degradation, size", [("bicubic", 16), ("blur", 16), ("compress", 64)])
def test_degradations(degradation, size):
    from vsrpp_cli.train.data import degrade

    gt = torch.from_numpy(moving_scene(3, 64, 64)).permute(0, 3, 1, 2).float() / 255
    config = TrainConfig(degradation=degradation, is_low_res_input=degradation != "compress")
    lq = degrade(gt, config, np.random.default_rng(0))
    assert lq.shape == (3, 3, size, size)
    assert torch.equal(lq, (lq * 255).round() / 255)  # 8-bit values
    if degradation == "compress":
        error = (lq - gt).abs().mean()
        assert 0 < error < 0.1  # real artefacts, same picture
