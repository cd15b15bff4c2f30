"""The options `vsrpp` shares among its commands, each declared once with its help, its panel
in `--help` and its checks (choices, ranges), so a wrong value is refused as it is parsed.
Nothing here imports torch."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

# The panels of `--help` that group each command's options.
MODEL, WINDOWS, ENCODING, OUTPUT = "Model", "Windows and tiles", "Encoding", "Output"
TRAIN, RECIPE, LAUNCH = "Data and output", "Recipe (defaults: the official REDS4 one)", "Processes and machines"


def check_device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise typer.BadParameter(f"{value!r}: choose auto, cpu, cuda or cuda:N")
    return value



def check_patch_size(value: int | None) -> int | None:
    """x4 models train on low-resolution crops a quarter of the ground truth's: whole pixels only."""
    if value is not None and value % 4:
        lower, higher = value - value % 4, value - value % 4 + 4
        raise typer.BadParameter(f"{value}: give a multiple of 4 (the low-resolution crop is a quarter), e.g. "
                                 f"{lower} or {higher}")  # fmt: skip
    return value



def one_of(*choices: str) -> Any:
    """A check for a repeatable option (typer's Literal choices take single values only)."""

    def check(values: list[str] | None) -> list[str] | None:
        for value in values or ():
            if value not in choices:
                raise typer.BadParameter(f"{value!r}: choose from {', '.join(choices)}")
        return values

    return check



def check_size(value: str) -> str:
    match = re.fullmatch(r"(\d+)x(\d+)", value.lower())
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise typer.BadParameter(f"{value!r}: give HxW in pixels, each at least 1, e.g. 180x320")
    return value



def flag(help: str, *names: str, panel: str | None = None) -> Any:
    return typer.Option(*names, help=help, metavar="", rich_help_panel=panel)



def option(help: str, *names: str, metavar: str = "N", panel: str | None = None, **checks: Any) -> Any:
    return typer.Option(*names, help=help, metavar=metavar, rich_help_panel=panel, **checks)



# ----------------------------------------------------------------------------- options, once
ModelName = Annotated[
    str | None,
    option("A model of the zoo (`vsrpp weights list`), fetched once; default reds4.", metavar="NAME", panel=MODEL),
]



WeightsFile = Annotated[
    Path | None, option("A local BasicVSR++ checkpoint (.pth) instead of the zoo.", metavar="FILE", panel=MODEL)
]



Device = Annotated[
    str, option("auto (CUDA when present), cpu, cuda or cuda:N.", metavar="DEVICE", panel=MODEL, callback=check_device)
]



Precision = Annotated[
    Literal["auto", "fp32", "fp16", "bf16"],
    option("Arithmetic: auto is fp16 on CUDA, fp32 on CPU.", metavar=None, panel=MODEL),
]



TileSize = Annotated[int, option("Tile size in input pixels; 0 = whole frames.", panel=WINDOWS, min=0)]



TileOverlap = Annotated[int, option("Input pixels neighbouring tiles share, blended.", panel=WINDOWS, min=0)]



Quiet = Annotated[bool, flag("No progress bar or notices.", "--quiet", "-q")]



AsJson = Annotated[bool, flag("Print the result as JSON on stdout.", "--json")]



NprocPerNode = Annotated[
    int | None,
    option(
        "Processes on this machine, one per GPU (default: every GPU; 1 on CPU).",
        "--nproc-per-node",
        "--gpus",
        panel=LAUNCH,
        min=1,
    ),
]



Nnodes = Annotated[int, option("Machines taking part (SLURM's SLURM_NNODES when unset).", panel=LAUNCH, min=1)]



NodeRank = Annotated[int, option("This machine's rank (0 for the first).", panel=LAUNCH, min=0)]



MasterAddr = Annotated[
    str | None, option("Address of the first machine (needed with --nnodes > 1).", metavar="HOST", panel=LAUNCH)
]



MasterPort = Annotated[
    int | None,
    option("Port on the first machine (29500; upscale uses the two after it too).", metavar="PORT", panel=LAUNCH,
           min=1, max=65535),
]



RdzvEndpoint = Annotated[str | None, option("host:port of the rendezvous instead.", metavar="HOST:PORT", panel=LAUNCH)]



TrainDeviceChoice = Literal["auto", "cuda", "cpu"]



TrainDevice = Annotated[
    TrainDeviceChoice,
    option("auto, cuda, or cpu (gloo; for tests and small runs).", metavar=None, panel=LAUNCH),
]



ChunkFrames = Annotated[int, option("Frames kept per window; 0 sizes windows to the device.", panel=WINDOWS, min=0)]



ChunkOverlap = Annotated[
    int, option("Context frames run on each side of a window, then dropped.", panel=WINDOWS, min=0)
]



SceneCuts = Annotated[
    str,
    option(
        "Shots: no window reaches across a cut, so one shot's picture never bleeds into the next. auto finds "
        "hard cuts in the frames (fades, flashes and fast motion are no cuts); off runs straight through; or "
        "a FILE of frame numbers or times (120, 5.0s, 00:01:05.2), or PySceneDetect's scene list CSV.",
        metavar="auto|off|FILE",
        panel=WINDOWS,
    ),
]



Codec = Annotated[
    str | None,
    option("libx264 (default), libx265, libsvtav1, libvpx-vp9, ffv1, ...", metavar="NAME", panel=ENCODING),
]



Crf = Annotated[
    int | None, option("Constant quality, lower is better (libx264/libx265: 0-51; VP9, AV1: 0-63).", panel=ENCODING)
]



Preset = Annotated[str | None, option("Encoder preset, e.g. slow, medium, fast.", metavar="NAME", panel=ENCODING)]



Colour = Annotated[
    Literal["device", "swscale"],
    option(
        "Where YUV<->RGB conversion runs: device (with the network, on the GPU when it runs there; chroma "
        "sited as each codec expects) or swscale (FFmpeg's, on the CPU).",
        metavar=None,
        panel=ENCODING,
    ),
]



Deinterlace = Annotated[
    Literal["auto", "bwdif", "yadif", "off"],
    option(
        "Interlaced input: auto deinterlaces it with FFmpeg's bwdif (frame rate kept) and says so; off treats "
        "every frame as progressive.",
        metavar=None,
        panel=ENCODING,
    ),
]



DeformBackend = Annotated[
    Literal["auto", "triton", "torch", "torchvision", "mmcv", "plain"],
    option(
        "Deformable-conv kernel: auto takes the first of triton (CUDA, fp16/bf16), mmcv, torchvision, torch "
        "that passes its check here (`vsrpp info --backends`).",
        metavar=None,
        panel=MODEL,
    ),
]



Fps = Annotated[
    float | None,
    option(
        "Frame rate for inputs whose frames carry no times: raw streams (.h264, .hevc, .ivf) and frame "
        "folders (default: the stream's rate, else 25).",
        metavar="RATE",
        panel=ENCODING,
        min=0.001,
    ),
]



AmpMode = Literal["off", "fp16", "bf16"]



Strength = Annotated[
    float,
    option(
        "How much of the network's result: 1 = all of it; 0 = the source enlarged as the network's own skip "
        "connection enlarges it (bilinear for x4 models); between, a blend of the two.",
        metavar="S",
        panel=MODEL,
        min=0.0,
        max=1.0,
    ),
]
