"""The `vsrpp` command as users run it, real files (in-process; a real process where that matters)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from harness import run_vsrpp, vsrpp_process
from reference import random_official_checkpoint

import vsrpp_cli
from vsrpp_cli.run.engine import slow_on_this_cpu


def vsrpp(*args: str):
    return run_vsrpp(*args)


def test_help_and_version():
    result = vsrpp("--help")
    assert result.returncode == 0
    assert "info" in result.stdout
    result = vsrpp_process("--version")  # the entry point itself
    assert result.returncode == 0
    assert result.stdout.strip() == f"vsrpp {vsrpp_cli.__version__}"


def test_the_commands_are_declared_once_a_process_whatever_runs_them():
    """typer builds the click commands from the declarations (70 ms of introspection): once, for
    every later command and every option the library checks, not at each call."""
    from vsrpp_cli.cli.definition import click_group

    vsrpp("--version")
    built = click_group.cache_info().misses
    assert vsrpp("--help").returncode == 0 and vsrpp("upscale", "--no-such-flag").returncode == 2
    with pytest.raises(vsrpp_cli.VsrppError, match="tile=-1"):
        vsrpp_cli.Upscaler(weights="unused.pth", tile=-1)
    assert click_group.cache_info().misses == built == 1


def test_info_describes_an_official_checkpoint(tmp_path):
    path = tmp_path / "basicvsr_plusplus_c64n7_8x1_600k_reds4_test.pth"
    torch.save(random_official_checkpoint(), path, _use_new_zipfile_serialization=False)
    result = vsrpp("info", str(path), "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["parameters"] == 7_322_927
    assert (facts["mid_channels"], facts["num_blocks"], facts["scale"]) == (64, 7, 4)
    assert facts["layout"] == "official"
    assert facts["also_in_file"] == ["step_counter"]
    assert facts["meta"]["iter"] == 600000
    assert len(facts["sha256"]) == 64

    text = vsrpp("info", str(path))
    assert text.returncode == 0
    assert "7,322,927" in text.stdout and "C64/N7" in text.stdout and "super-resolution" in text.stdout
    assert "None" not in text.stdout  # not a zoo model: said as (none)


def test_listing_the_zoo_imports_no_torch():
    """`weights list` took 3.7 s importing torch for parameter counts that are constants."""
    import subprocess
    import sys

    script = "import sys\nfrom vsrpp_cli.cli import run\nrun(['weights', 'list', '--json'])\n"
    script += "assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert '"name": "reds4"' in result.stdout


def test_info_on_a_bad_file_is_one_line_without_traceback(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"\x80\x02not really")
    result = vsrpp("info", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not a readable torch checkpoint" in result.stderr

    debug = vsrpp_process("--debug", "info", str(path))  # the traceback a real process prints
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr


def test_info_on_a_training_state_names_the_weights_beside_it(tmp_path):
    """latest.state.pth (what `vsrpp train` keeps to resume) is not a model: info says so and
    names latest.pth, instead of complaining about its first entry."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    state = {"iteration": 300, "best_psnr": 20.5, "optimizer": optimizer.state_dict(), "scheduler": {"last_epoch": 300},
             "scaler": {}, "torch_rng": [torch.get_rng_state()]}  # fmt: skip
    torch.save(state, tmp_path / "latest.state.pth")
    result = vsrpp("info", str(tmp_path / "latest.state.pth"))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "a training run's state (optimizer and schedule at iteration 300), not a model" in result.stderr
    assert str(tmp_path / "latest.pth") in result.stderr


def test_missing_checkpoint(tmp_path):
    result = vsrpp("info", str(tmp_path / "nothing.pth"))
    assert result.returncode == 1
    assert "no such checkpoint file" in result.stderr


def test_bench_reports_model_pipeline_and_quality_guard(official_checkpoint):
    """Every row of the matrix, and the quality guard: ours in fp32 is the plain network's output;
    bf16 is close, not equal. bf16 only where this CPU computes it natively: elsewhere one bf16
    forward of the smallest frames takes 20 s (PyTorch's reference convolution, 47x fp32 on a
    2-core EPYC), and vsrpp says so before it starts (tests/test_threads.py holds that rule)."""
    half = [] if slow_on_this_cpu(torch.bfloat16) else ["bf16"]
    arguments = ["--weights", official_checkpoint(16, 2, True)[0], "--size", "32x40", "--frames", "2"]
    for precision in ["fp32", *half]:
        arguments += ["--precision", precision]
    arguments += ["--repeat", "1", "--device", "cpu", "--colour", "device", "--colour", "swscale", "--json"]
    result = vsrpp("bench", *arguments)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    models = [("model", "fp32", "plain", None), ("model", "fp32", "torch", None)]
    models += [("model", p, "torch", None) for p in half]
    pipelines = [("pipeline", p, "auto", colour) for p in ["fp32", *half] for colour in ("device", "swscale")]
    assert [(r["what"], r["precision"], r["backend"], r["colour"]) for r in rows] == models + pipelines
    assert all(r["fps"] > 0 and r["finite"] and r["size"] == "32x40" for r in rows)
    assert rows[1]["max_diff_vs_fp32"] < 1e-5  # ours in fp32 is the plain network's output
    if half:
        assert 30 < rows[2]["psnr_vs_fp32"] < 200 and rows[2]["max_diff_vs_fp32"] > 0  # bf16: close, not equal


def test_bench_warns_of_a_slow_precision_before_its_work(official_checkpoint):
    """On a CPU without a fast bf16 convolution the warning comes first, before the minutes the
    rows cost (the warning stops the run here); on one with it, nothing is said and the row runs."""
    from vsrpp_cli.quality.bench import bench

    class WarnedError(Exception):
        pass

    said: list[str] = []

    def stop(message: str) -> None:
        said.append(message)
        raise WarnedError

    weights = official_checkpoint(8, 1, True)[0]
    try:
        rows = bench((32, 40), 2, ["bf16"], "cpu", weights=weights, baseline=False, pipeline=False, repeat=1, warn=stop)
    except WarnedError:
        rows = []
    assert bool(said) is slow_on_this_cpu(torch.bfloat16)
    assert said == [] or (said[0].startswith("bf16 on this CPU is 40-90x slower") and rows == [])
    assert said != [] or [r.precision for r in rows] == ["bf16"]


def test_the_bench_table_fits_80_columns():
    from vsrpp_cli.cli import output
    from vsrpp_cli.quality.bench import Row

    base = {"device": "cpu", "size": "48x64", "frames": 4, "peak_gpu_mib": None, "peak_rss_mib": 905.0, "threads": 2}
    rows = [
        Row("model", "fp32", "plain", fps=2.569, ms_per_frame=389.2, **base),
        Row("model", "fp32", "torch", fps=3.466, ms_per_frame=288.5, psnr_vs_fp32=158.3, max_diff_vs_fp32=6e-7, **base),
        Row("pipeline", "fp32", "auto", fps=1.773, ms_per_frame=563.9, colour="device", **base),
        Row("pipeline", "bf16", "auto", fps=1.1, ms_per_frame=900.0, colour="swscale", **base),
    ]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        output.bench_table(rows, "vsrpp bench")  # (80 columns: rich's width where there is no terminal)
    lines = printed.getvalue().splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in printed.getvalue()
    assert "every row: graphs off, batch 1" in printed.getvalue()  # said once, not in a column


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_a_patch_size_that_is_no_multiple_of_4_is_refused_when_parsed(tmp_path, command):
    """66 used to pass parsing and end in a 110-line failure of every training process."""
    extra = ["--from", "reds4", "--data", tmp_path, "--work-dir", tmp_path / "w"] if command == "finetune" else []
    result = run_vsrpp(command, *extra, "--patch-size", "66")
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "66: give a multiple of 4" in line and "64 or 68" in line and len(line.splitlines()) == 1
    assert not (tmp_path / "w").exists()


def test_info_says_which_backends_work_here():
    result = run_vsrpp("info", "--backends", "--json")
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert {"torch", "plain"} <= set(table["works"]["cpu fp32"]) and table["auto"]["cpu fp32"] in table["works"][
        "cpu fp32"
    ]
    assert table["convolution"]["cpu fp32"] == "fast"
    assert table["convolution"]["cpu bf16"] == ("slow" if slow_on_this_cpu(torch.bfloat16) else "fast")
    printed = run_vsrpp("info", "--backends")
    assert ("40-90x slower" in printed.stdout) is slow_on_this_cpu(torch.bfloat16)
    assert run_vsrpp("info").returncode == 2  # neither a checkpoint nor --backends


def test_a_backend_that_does_not_work_here_is_refused_before_any_work(tmp_path, official_checkpoint):
    from media import encode_video, moving_scene

    from vsrpp_cli.network.deform_conv import backend_works

    if backend_works("mmcv", "cpu", torch.float32):
        pytest.skip("mmcv works here")
    source = encode_video(tmp_path / "in.mp4", moving_scene(2, 48, 64))
    weights = official_checkpoint(8, 1, True)[0]
    result = run_vsrpp("upscale", source, tmp_path / "out.mp4", "--weights", weights, "--deform-backend", "mmcv")
    assert result.returncode == 2
    assert "--deform-backend mmcv: not usable on cpu in float32" in result.stderr and "info --backends" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
