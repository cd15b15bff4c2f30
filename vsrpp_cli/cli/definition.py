"""What `vsrpp` accepts: every command and option, each option declared once and checked as it
is parsed (choices, ranges), so a wrong value is refused before any work starts. Each command
hands its values to cli/core.py, which does the work (`Namespace(**locals())`: the command's
parameters by name, as httpie's parser hands its namespace to its core). Nothing here imports torch: `vsrpp --help`
and `--version` stay quick.
"""

from __future__ import annotations

import re
from argparse import Namespace
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from typer.core import TyperCommand, TyperGroup

from .. import __version__
from . import core
from .core import state


class _QuietHelpFlag:
    """--help takes no value: help shows none for it (typer would print `<bool>`)."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class Command(_QuietHelpFlag, TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:  # an argument named by its metavar needs no Python type beside it
            if param.param_type_name == "argument" and param.metavar:
                param.display_type_rich = lambda ctx: None


class Group(_QuietHelpFlag, TyperGroup):
    pass


app = typer.Typer(
    name="vsrpp",
    cls=Group,
    help="Sharper video with BasicVSR++: 4x video super-resolution and same-size restoration.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
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
    int | None, option("Port on the first machine (29500).", metavar="PORT", panel=LAUNCH, min=1, max=65535)
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


def _show_version(value: bool) -> None:
    if value:
        print(f"vsrpp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", "-V", metavar="", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = None,
    debug: Annotated[bool, flag("Show a full traceback on errors.", "--debug")] = False,
) -> None:
    state.debug = debug


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
            "CPU (measured at 180x320); for long videos with --precision bf16 --device cpu.",
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
            "committed. An interruption loses at most one window's work. Default: 240, or fewer so that every "
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


__all__ = ["app", "state"]
