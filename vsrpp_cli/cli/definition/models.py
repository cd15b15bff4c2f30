"""The commands on models: `train`, `finetune`, and `weights` (the model zoo)."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from typing import Annotated, Literal

import typer

from .. import core
from ..options import (
    LAUNCH,
    RECIPE,
    TRAIN,
    AmpMode,
    AsJson,
    MasterAddr,
    MasterPort,
    Nnodes,
    NodeRank,
    NprocPerNode,
    Quiet,
    RdzvEndpoint,
    TrainDevice,
    TrainDeviceChoice,
    check_patch_size,
    flag,
    option,
)
from .app import Command, Group, app


# ----------------------------------------------------------------------------- train, finetune
@app.command(cls=Command)
def train(
    data_root: Annotated[
        Path | None,
        option("REDS: train_sharp/ and train_sharp_bicubic/X4/ inside (data/REDS).", metavar="DIR", panel=TRAIN),
    ] = None,
    work_dir: Annotated[
        Path | None,
        option("Checkpoints, logs and the resolved config go here (runs/reds4).", metavar="DIR", panel=TRAIN),
    ] = None,
    config: Annotated[
        Path | None, option("A JSON file of settings; flags given win over it.", metavar="FILE", panel=TRAIN)
    ] = None,
    resume: Annotated[
        bool, flag("Continue the run in --work-dir from its latest checkpoint.", "--resume", panel=TRAIN)
    ] = False,
    iters: Annotated[int | None, option("Iterations (600000).", panel=RECIPE, min=1)] = None,
    num_frames: Annotated[int | None, option("Frames per clip (30).", panel=RECIPE, min=2)] = None,
    patch_size: Annotated[
        int | None,
        option("Ground-truth crop (256; 64 on the low-res side).", panel=RECIPE, min=4, callback=check_patch_size),
    ] = None,
    batch_size: Annotated[int | None, option("Clips per process per iteration (1).", panel=RECIPE, min=1)] = None,
    lr: Annotated[
        float | None, option("Adam learning rate (1e-4), cosine to 1e-7.", metavar="RATE", panel=RECIPE, min=0)
    ] = None,
    fix_iter: Annotated[int | None, option("Iterations with SPyNet frozen (5000).", panel=RECIPE, min=0)] = None,
    mid_channels: Annotated[int | None, option("Channels C (64).", panel=RECIPE, min=1)] = None,
    num_blocks: Annotated[int | None, option("Residual blocks per branch N (7).", panel=RECIPE, min=1)] = None,
    val_interval: Annotated[
        int | None, option("Validate on REDS4 every N iterations (5000; 0 = never).", panel=RECIPE, min=0)
    ] = None,
    save_interval: Annotated[
        int | None, option("Save a checkpoint every N iterations (5000).", panel=RECIPE, min=1)
    ] = None,
    log_interval: Annotated[int | None, option("Log every N iterations (100).", panel=RECIPE, min=1)] = None,
    seed: Annotated[int | None, option("Seed of initial weights and samples (0).", panel=RECIPE)] = None,
    amp: Annotated[
        AmpMode | None, option("Mixed precision: off, fp16 or bf16 (off).", metavar=None, panel=RECIPE)
    ] = None,
    spynet: Annotated[
        Path | None, option("SPyNet weights (default: the official one, fetched).", metavar="FILE", panel=RECIPE)
    ] = None,
    workers: Annotated[
        int | None, option("Data-loading processes per training process (4).", panel=RECIPE, min=0)
    ] = None,
    stop_after: Annotated[
        int | None, option("Stop after N iterations this run (resume later).", panel=RECIPE, min=0)
    ] = None,
    nproc_per_node: NprocPerNode = None,
    device: Annotated[
        TrainDeviceChoice | None,
        option("auto, cuda, or cpu (gloo; for tests and small runs).", metavar=None, panel=LAUNCH),
    ] = None,
    nnodes: Nnodes = 1,
    node_rank: NodeRank = 0,
    master_addr: MasterAddr = None,
    master_port: MasterPort = None,
    rdzv_endpoint: RdzvEndpoint = None,
) -> None:
    """Train BasicVSR++ on REDS with the official recipe, on N GPUs (or CPU processes).

    Example: vsrpp train --data-root data/REDS --nproc-per-node 8 --work-dir runs/reds4
    """
    core.train(Namespace(**locals()))


@app.command(cls=Command)
def finetune(
    start: Annotated[
        str, option("A zoo model name or a checkpoint file to start from.", "--from", metavar="MODEL|FILE", panel=TRAIN)
    ],
    data: Annotated[
        Path,
        option("Your high-quality videos or folders of frames (or GT/ and LQ/ pairs).", metavar="PATH", panel=TRAIN),
    ],
    work_dir: Annotated[Path, option("Checkpoints, logs and the resolved config go here.", metavar="DIR", panel=TRAIN)],
    degradation: Annotated[
        Literal["bicubic", "blur", "compress"] | None,
        option(
            "How the low-quality side is made: bicubic or blur (x4 models), compress (same-size).",
            metavar=None,
            panel=RECIPE,
        ),
    ] = None,
    codec: Annotated[str, option("Encoder for --degradation compress.", metavar="NAME", panel=RECIPE)] = "libx264",
    crf: Annotated[
        int, option("Quality for --degradation compress (higher = worse).", panel=RECIPE, min=0, max=63)
    ] = 32,
    iters: Annotated[int, option("Iterations.", panel=RECIPE, min=1)] = 5000,
    lr: Annotated[float, option("Adam learning rate, cosine to 1e-7.", metavar="RATE", panel=RECIPE, min=0)] = 2e-5,
    num_frames: Annotated[int, option("Frames per clip.", panel=RECIPE, min=2)] = 15,
    patch_size: Annotated[
        int,
        option(
            "High-quality crop size, a multiple of 4 (at most the frames' size).",
            panel=RECIPE,
            min=4,
            callback=check_patch_size,
        ),
    ] = 256,
    save_interval: Annotated[int, option("Save every N iterations.", panel=RECIPE, min=1)] = 500,
    log_interval: Annotated[int, option("Log every N iterations.", panel=RECIPE, min=1)] = 50,
    amp: Annotated[AmpMode, option("Mixed precision: off, fp16 or bf16.", metavar=None, panel=RECIPE)] = "off",
    workers: Annotated[int, option("Data-loading processes per training process.", panel=RECIPE, min=0)] = 4,
    stop_after: Annotated[int, option("Stop after N iterations this run (resume later).", panel=RECIPE, min=0)] = 0,
    resume: Annotated[bool, flag("Continue the run in --work-dir.", "--resume", panel=TRAIN)] = False,
    device: TrainDevice = "auto",
    nproc_per_node: NprocPerNode = None,
) -> None:
    """Adapt a checkpoint to your own footage: the low-quality side is made on the fly.

    Videos in --data are decoded once into frames under --work-dir. x4 models learn from bicubic
    (as REDS) or blur-and-downsample (as Vimeo BD); same-size models from a real encode at --crf.

    Example: vsrpp finetune --from reds4 --data my_videos/ --work-dir runs/mine
    """
    core.finetune(Namespace(**locals()))


# ----------------------------------------------------------------------------- weights
weights_app = typer.Typer(
    cls=Group, help="The model zoo: list, download, locate and verify official checkpoints.", no_args_is_help=True
)


app.add_typer(weights_app, name="weights")


@weights_app.command("list", cls=Command)
def weights_list(as_json: AsJson = False) -> None:
    """Every model of the zoo: task, scale, size, and whether it is on this machine."""
    core.weights_list(Namespace(**locals()))


@weights_app.command("download", cls=Command)
def weights_download(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A model name from `vsrpp weights list`, or `all`.")],
    quiet: Quiet = False,
) -> None:
    """Fetch a model (or all of them), verify its checksum, and keep it for later runs."""
    core.weights_download(Namespace(**locals()))


@weights_app.command("path", cls=Command)
def weights_path(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A model name from `vsrpp weights list`.")],
) -> None:
    """Where a model's file lives (or will, once downloaded)."""
    core.weights_path(Namespace(**locals()))


@weights_app.command("verify", cls=Command)
def weights_verify(as_json: AsJson = False) -> None:
    """Re-hash every downloaded model against the checksum in its name, and say what was found."""
    core.weights_verify(Namespace(**locals()))
