"""The commands on video: `upscale`, `preview`, `info`, `eval` and `bench`."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from typing import Annotated, Literal

import typer

from .. import core
from ..options import (
    ENCODING,
    LAUNCH,
    MODEL,
    OUTPUT,
    WINDOWS,
    AsJson,
    ChunkFrames,
    ChunkOverlap,
    Codec,
    Colour,
    Crf,
    DeformBackend,
    Deinterlace,
    Device,
    Fps,
    MasterAddr,
    MasterPort,
    ModelName,
    Nnodes,
    NodeRank,
    Precision,
    Preset,
    Quiet,
    RdzvEndpoint,
    SceneCuts,
    Strength,
    TileOverlap,
    TileSize,
    WeightsFile,
    check_size,
    flag,
    one_of,
    option,
)
from .app import Command, app


# ----------------------------------------------------------------------------- info
@app.command(cls=Command)
def info(
    checkpoint: Annotated[
        Path | None,
        typer.Argument(metavar="[CHECKPOINT]", help="A BasicVSR++ checkpoint (.pth): official, BasicSR or plain."),
    ] = None,
    backends: Annotated[
        bool, flag("Which deformable-conv backends work here, per device and precision, and which auto picks.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """What a checkpoint holds: architecture, parameter count, task, layout and metadata; or, with
    --backends, the deformable-conv backends this machine can run.

    The file is read with torch.load(weights_only=True): nothing in it runs.
    """
    core.info(Namespace(**locals()))


# ----------------------------------------------------------------------------- upscale
@app.command(cls=Command)
def upscale(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH",
            help="INPUT... OUTPUT. Inputs: video files (anything FFmpeg reads), folders of PNG/JPEG frames, or "
            "folders of videos; - reads one stream from standard input (Matroska, NUT, MPEG-TS, yuv4mpegpipe). "
            "Output: a video (.mp4 .mkv .mov .webm), a folder for PNG frames, for several inputs the folder to "
            "write them into; - writes to standard output as the run goes (Matroska, or --format).",
            show_default=False,
        ),
    ],
    model: ModelName = None,
    weights: WeightsFile = None,
    device: Device = "auto",
    precision: Precision = "auto",
    strength: Strength = 1.0,
    nproc_per_node: Annotated[
        int,
        option(
            "Processes on this machine, one per GPU: one input's segments are shared among them (with --device "
            "cpu, CPU processes); several inputs go one per GPU.",
            "--nproc-per-node",
            "--gpus",
            panel=LAUNCH,
            min=1,
        ),
    ] = 1,
    nnodes: Nnodes = 1,
    node_rank: NodeRank = 0,
    master_addr: MasterAddr = None,
    master_port: MasterPort = None,
    rdzv_endpoint: RdzvEndpoint = None,
    max_restarts: Annotated[
        int,
        option(
            "Times the workers of this machine are started again after one fails; their segments are taken "
            "again (one machine only).",
            panel=LAUNCH,
            min=0,
        ),
    ] = 0,
    graphs: Annotated[
        bool, flag("Replay the propagation steps as CUDA graphs (CUDA only; --no-graphs to run eagerly).", panel=MODEL)
    ] = True,
    deterministic: Annotated[
        bool | None,
        flag(
            "The same bits in every process on the same GPU model: cuDNN's benchmark off, deterministic "
            "algorithms, TF32 off (slower). Off by default: each frame comes from one process, so a run "
            "with workers needs it no more than one without.",
            "--deterministic/--no-deterministic",
            panel=MODEL,
        ),
    ] = None,
    compile: Annotated[
        bool,
        flag(
            "torch.compile the alignment modules: about 45 s of compilation, then 1.28x faster in bf16 on the "
            "CPU (measured at 180x320 with AVX-512); for long videos with --precision bf16 --device cpu.",
            "--compile",
            panel=MODEL,
        ),
    ] = False,
    chunk_frames: ChunkFrames = 0,
    chunk_overlap: ChunkOverlap = 8,
    scene_cuts: SceneCuts = "auto",
    tile: TileSize = 0,
    tile_overlap: TileOverlap = 16,
    batch: Annotated[
        int,
        option(
            "Windows (and equal-size tiles) run through the network together; 0 = as many as fit in the "
            "GPU's free memory (up to 8), 1 on CPU. The output does not depend on it.",
            panel=WINDOWS,
            min=0,
        ),
    ] = 0,
    codec: Codec = None,
    crf: Crf = None,
    preset: Preset = None,
    pix_fmt: Annotated[
        str | None, option("Output pixel format (default 4:2:0 at the input's depth).", metavar="NAME", panel=ENCODING)
    ] = None,
    colour: Colour = "device",
    deinterlace: Deinterlace = "auto",
    fps: Fps = None,
    deform_backend: DeformBackend = "auto",
    overwrite: Annotated[
        bool, flag("Replace OUTPUT if it is a file or frames folder vsrpp wrote.", "--overwrite", panel=OUTPUT)
    ] = False,
    resume: Annotated[bool, flag("Continue an interrupted run of the same OUTPUT.", "--resume", panel=OUTPUT)] = False,
    segment_frames: Annotated[
        int,
        option(
            "Output frames per segment, the unit of work: each is encoded apart (starting on a keyframe) and "
            "committed. An interruption loses at most a window or two of work. Default: 240, or fewer so that every "
            "worker of a shared run gets several. A frames folder commits every window as it is done.",
            panel=OUTPUT,
            min=0,
        ),
    ] = 0,
    output_format: Annotated[
        str | None,
        option(
            "What - (standard output) is written as: matroska (default), nut, mpegts or yuv4mpegpipe "
            "(raw frames, video only).",
            "--format",
            metavar="NAME",
            panel=OUTPUT,
        ),
    ] = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Upscale video 4x with BasicVSR++, keeping every frame, its timestamp, the audio and the colours.

    Long videos stream through windows of --chunk-frames frames with --chunk-overlap frames of
    context each side; large frames can go through in tiles. The output is committed in closed
    segments as it goes: an interrupted run keeps them, and the same command with --resume
    continues from the last one.

    With - as INPUT or OUTPUT the run is one pass through pipes: frames come out chunk-frames +
    chunk-overlap frames behind the input (plus the encoder's delay), with audio and subtitles.

    Example: vsrpp upscale in.mp4 out.mp4   (the reds4 model, downloaded once)
    Example: ffmpeg -i in.mov -f matroska - | vsrpp upscale - - | ffmpeg -i - -c:v libx265 out.mp4
    """
    core.upscale(Namespace(**locals()))


# ----------------------------------------------------------------------------- preview
@app.command(cls=Command)
def preview(
    source: Annotated[Path, typer.Argument(metavar="INPUT", help="A video file or a folder of frames.")],
    at: Annotated[
        list[str] | None,
        option(
            "A moment to show (SECONDS, MM:SS or HH:MM:SS); repeat for several. Default: three spread over the video.",
            "--at",
            metavar="TIME",
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        option("A model of the zoo; repeat to compare several side by side.", metavar="NAME", panel=MODEL),
    ] = None,
    weights: Annotated[
        list[Path] | None, option("A local checkpoint; repeat to compare several.", metavar="FILE", panel=MODEL)
    ] = None,
    strength: Annotated[
        list[float] | None,
        option("Strength(s) to compare (0 to 1; default 1): each model is shown at each.", metavar="S", panel=MODEL),
    ] = None,
    output_dir: Annotated[
        Path | None,
        option("Where the images go (default: INPUT's name + -preview).", "--output", metavar="DIR", panel=OUTPUT),
    ] = None,
    device: Device = "auto",
    precision: Precision = "auto",
    chunk_frames: ChunkFrames = 0,
    chunk_overlap: ChunkOverlap = 8,
    scene_cuts: SceneCuts = "auto",
    tile: TileSize = 0,
    tile_overlap: TileOverlap = 16,
    codec: Codec = None,
    crf: Crf = None,
    preset: Preset = None,
    colour: Colour = "device",
    deinterlace: Deinterlace = "auto",
    fps: Fps = None,
    deform_backend: DeformBackend = "auto",
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """See what `upscale` will give before spending hours: a few moments upscaled exactly as the
    whole run would upscale them, beside the source enlarged bicubically, with a zoom on detail.

    Prints how long the whole video would take on this device and how large it would be, and the
    `vsrpp upscale` command that makes it.

    Example: vsrpp preview film.mp4 --at 00:01:23 --model reds4 --strength 1 --strength 0.6
    """
    core.preview(Namespace(**locals()))


# ----------------------------------------------------------------------------- eval
@app.command("eval", cls=Command)
def eval_command(
    dataset: Annotated[
        Literal["REDS4", "Vid4-BI", "Vid4-BD", "UDM10-BD", "Vimeo-90K-T-BI", "Vimeo-90K-T-BD"] | None,
        option(
            "A standard test set, scored under its official protocol.", metavar=None, panel="Data", case_sensitive=False
        ),
    ] = None,
    data_root: Annotated[
        Path | None, option("The dataset's folder (default: data/REDS, data/Vid4, ...).", metavar="DIR", panel="Data")
    ] = None,
    lq: Annotated[
        Path | None, option("Low-quality clips (folders of frames) for a custom pair.", metavar="DIR", panel="Data")
    ] = None,
    gt: Annotated[Path | None, option("Ground-truth clips matching --lq by name.", metavar="DIR", panel="Data")] = None,
    y_channel: Annotated[
        bool, flag("Score BT.601 luma instead of RGB (for --lq/--gt).", "--y-channel", panel="Data")
    ] = False,
    crop_border: Annotated[int, option("Pixels cropped from each edge before scoring.", panel="Data", min=0)] = 0,
    model: ModelName = None,
    weights: WeightsFile = None,
    device: Device = "auto",
    precision: Precision = "auto",
    strength: Strength = 1.0,
    deform_backend: DeformBackend = "auto",
    chunk_frames: Annotated[int, option("Frames per window; 0 = each clip as one sequence.", panel=WINDOWS, min=0)] = 0,
    chunk_overlap: Annotated[int, option("Context frames each side of a window.", panel=WINDOWS, min=0)] = 0,
    tile: TileSize = 0,
    tile_overlap: TileOverlap = 16,
    report_file: Annotated[
        Path | None,
        option(
            "Also write the results to FILE: .json (all facts) or .csv (per clip).",
            "--report",
            metavar="FILE",
            panel=OUTPUT,
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        option(
            "Also draw PSNR per frame for each clip into FILE.png (needs matplotlib).", metavar="FILE", panel=OUTPUT
        ),
    ] = None,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Score a model on a standard test set under the official protocol, beside the published number.

    Each clip runs as one sequence; outputs are rounded to 8 bits; PSNR and SSIM are averaged per
    clip, then over clips (REDS4 on RGB, the others on the Y channel). --precision, --chunk-frames
    and --tile show what each costs in dB.

    Example: vsrpp eval --dataset REDS4 --data-root data/REDS --model reds4
    """
    core.evaluate(Namespace(**locals()))


# ----------------------------------------------------------------------------- bench
@app.command(cls=Command)
def bench(
    size: Annotated[str, option("Input size HxW (output is 4x).", metavar="HxW", callback=check_size)] = "180x320",
    frames: Annotated[int, option("Frames per run.", min=2)] = 30,
    precision: Annotated[
        list[str] | None,
        option(
            "fp32, fp16 or bf16; repeat for several (default fp32).",
            metavar="NAME",
            callback=one_of("fp32", "fp16", "bf16"),
        ),
    ] = None,
    device: Device = "auto",
    backend: Annotated[
        list[str] | None,
        option(
            "Deformable-conv backend(s); repeat for several.",
            "--deform-backend",
            "--backend",
            metavar="NAME",
            callback=one_of("auto", "triton", "torch", "torchvision", "mmcv", "plain"),
        ),
    ] = None,
    weights: Annotated[
        Path | None, option("A checkpoint (default: random weights; speed does not depend on them).", metavar="FILE")
    ] = None,
    graphs: Annotated[
        Literal["on", "off", "both"], option("CUDA graphs for the propagation steps (CUDA only).", metavar=None)
    ] = "on",
    batch: Annotated[list[int] | None, option("Clips per forward; repeat for several (default 1).", min=1)] = None,
    stages: Annotated[
        bool, flag("Also time each stage of the forward (SPyNet, a step, the DCN...).", "--stages")
    ] = False,
    compiled: Annotated[
        bool, flag("Also time the model with its alignment modules through torch.compile.", "--compile")
    ] = False,
    encoders: Annotated[
        list[str] | None,
        option("Also time these encoders alone at 720p and 4K (e.g. libx264, h264_nvenc).", metavar="NAME"),
    ] = None,
    baseline: Annotated[bool, flag("Also time the plain fp32 implementation.")] = True,
    pipeline: Annotated[bool, flag("Also time the whole upscale pipeline (decode, encode).")] = True,
    repeat: Annotated[int, option("Timed runs after a warm-up; the best is kept.", min=1)] = 2,
    colour: Annotated[
        list[str] | None,
        option(
            "Pipeline colour conversion; repeat for both (default device).",
            metavar="NAME",
            callback=one_of("device", "swscale"),
        ),
    ] = None,
    plot: Annotated[
        Path | None, option("Also draw frames/s per configuration into FILE.png (needs matplotlib).", metavar="FILE")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Frames per second, milliseconds per frame and peak memory, for the network alone and for
    the whole upscale pipeline, with reduced precision checked against fp32.

    Example: vsrpp bench --size 540x960 --frames 30 --precision fp16 --precision bf16 --graphs both
    """
    core.bench(Namespace(**locals()))
