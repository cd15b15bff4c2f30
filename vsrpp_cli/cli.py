"""The `vsrpp` command line: parses, calls the library, reports. Nothing else lives here."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from . import __version__, zoo
from .checkpoint import CheckpointError, infer_architecture, load_strict, read_checkpoint, sha256_of
from .decode import InputError
from .encode import OutputError
from .evaluate import EvalError
from .network import BasicVSRPlusPlus
from .resume import ResumeError
from .train.data import DataError
from .zoo import ZooError

app = typer.Typer(
    name="vsrpp",
    help="Sharper video with BasicVSR++: 4x video super-resolution and same-size restoration.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
stdout = Console()
stderr = Console(stderr=True)
USER_ERRORS = (CheckpointError, EvalError, InputError, OutputError, ResumeError, ZooError, DataError, ValueError)
_state = {"debug": False}


def _show_version(value: bool) -> None:
    if value:
        print(f"vsrpp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option("--version", "-V", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show a full traceback on errors.")] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def info(
    checkpoint: Annotated[Path, typer.Argument(help="A BasicVSR++ checkpoint (.pth): official, BasicSR or plain.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts as JSON on stdout.")] = False,
) -> None:
    """What a checkpoint holds: architecture, parameter count, task, layout and metadata.

    The file is read with torch.load(weights_only=True): nothing in it runs.
    """
    facts = describe_checkpoint(checkpoint)
    if as_json:
        print(json.dumps(facts, indent=2, default=str))
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in facts.items():
        if key == "meta":
            value = ", ".join(f"{k}={_short(v)}" for k, v in value.items()) or "(none)"
        elif isinstance(value, list):
            value = ", ".join(value) or "(none)"
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        table.add_row(key.replace("_", " "), str(value))
    stdout.print(table)


def _option(help: str, panel: str | None = None, *names: str) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=panel)


MODEL, WINDOWS, ENCODING = "Model", "Windows and tiles", "Encoding"


@app.command()
def upscale(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="INPUT... OUTPUT. Inputs: video files (anything FFmpeg reads), folders of PNG/JPEG frames, or "
            "folders of videos. Output: a video (.mp4 .mkv .mov .webm), a folder for PNG frames, or, for "
            "several inputs, the folder to write them into.",
            show_default=False,
        ),
    ],
    model: Annotated[
        str | None, _option("A model of the zoo (`vsrpp weights list`); fetched on first use. Default: reds4.", MODEL)
    ] = None,
    weights: Annotated[Path | None, _option("A local BasicVSR++ checkpoint (.pth) instead of the zoo.", MODEL)] = None,
    device: Annotated[str, _option("auto, cpu, cuda or cuda:N.", MODEL)] = "auto",
    precision: Annotated[str, _option("auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16.", MODEL)] = "auto",
    gpus: Annotated[int, _option("Spread several inputs over this many GPUs.", MODEL)] = 1,
    chunk_frames: Annotated[int, _option("Frames kept per window; 0 sizes windows to the device.", WINDOWS)] = 0,
    chunk_overlap: Annotated[int, _option("Context frames run on each side of a window, then dropped.", WINDOWS)] = 8,
    tile: Annotated[int, _option("Tile size in input pixels; 0 = whole frames.", WINDOWS)] = 0,
    tile_overlap: Annotated[int, _option("Input pixels neighbouring tiles share, blended.", WINDOWS)] = 16,
    batch: Annotated[
        int,
        _option(
            "Windows (and equal-size tiles) run through the network together; 0 = as many as fit in the "
            "GPU's free memory (up to 8), 1 on CPU. The output does not depend on it.",
            WINDOWS,
        ),
    ] = 0,
    graphs: Annotated[
        bool,
        _option("Replay the propagation steps as CUDA graphs (CUDA only; --no-graphs to run eagerly).", MODEL),
    ] = True,
    compile: Annotated[
        bool,
        _option(
            "torch.compile the alignment modules: about 45 s of compilation, then 1.28x faster in bf16 on the "
            "CPU (measured at 180x320); for long videos with --precision bf16 --device cpu.",
            MODEL,
        ),
    ] = False,
    codec: Annotated[
        str | None, _option("libx264 (default), libx265, libsvtav1, libvpx-vp9, ffv1, ...", ENCODING)
    ] = None,
    crf: Annotated[int | None, _option("Constant quality (lower is better).", ENCODING)] = None,
    preset: Annotated[str | None, _option("Encoder preset, e.g. slow, medium, fast.", ENCODING)] = None,
    pix_fmt: Annotated[
        str | None, _option("Output pixel format (default 4:2:0 at the input's depth).", ENCODING)
    ] = None,
    colour: Annotated[
        str,
        _option(
            "Where YUV<->RGB conversion runs: device (with the network, on the GPU when it runs there; "
            "chroma sited as each codec expects) or swscale (FFmpeg's, on the CPU).",
            ENCODING,
        ),
    ] = "device",
    overwrite: Annotated[bool, _option("Replace OUTPUT if it exists.")] = False,
    resume: Annotated[bool, _option("Continue an interrupted run of the same OUTPUT.")] = False,
    quiet: Annotated[bool, _option("No progress bar or notices.", None, "--quiet", "-q")] = False,
    as_json: Annotated[bool, _option("Print the summary as JSON on stdout.", None, "--json")] = False,
) -> None:
    """Upscale video 4x with BasicVSR++, keeping every frame, its timestamp, the audio and the colours.

    Long videos stream through windows of --chunk-frames frames with --chunk-overlap frames of
    context each side; large frames can go through in tiles. An interrupted run keeps its finished
    windows: run the same command with --resume to continue.

    Example: vsrpp upscale in.mp4 out.mp4   (the reds4 model, downloaded once)
    """
    from .upscale import Options, plan_jobs, run_jobs

    if len(paths) < 2:
        raise ValueError("give an INPUT and an OUTPUT, e.g. vsrpp upscale in.mp4 out.mp4")
    if weights is not None and model is not None:
        raise ValueError("give either --model NAME or --weights PATH, not both")
    if weights is None:
        weights = zoo.ensure(model or zoo.DEFAULT_MODEL, progress=not quiet, notice=lambda m: stderr.print(m))
    if tile and tile <= 2 * tile_overlap:
        raise ValueError(f"--tile {tile} must be larger than twice --tile-overlap ({tile_overlap})")
    if batch < 0:
        raise ValueError(f"--batch {batch}: give 1 or more windows per forward, or 0 to size it to the GPU")
    *inputs, output = paths
    jobs = plan_jobs(inputs, output)
    options = Options(
        weights=weights,
        device=device,
        precision=precision,
        chunk_frames=chunk_frames,
        chunk_overlap=chunk_overlap,
        tile=tile,
        tile_overlap=tile_overlap,
        codec=codec,
        crf=crf,
        preset=preset,
        pix_fmt=pix_fmt,
        overwrite=overwrite,
        resume=resume,
        colour=colour,
        batch=batch,
        graphs=graphs,
        compile=compile,
    )

    def notice(message: str) -> None:
        if not quiet:
            stderr.print(f"[yellow]note:[/] {message}", highlight=False, soft_wrap=True)

    with UpscaleProgress([source.name for source, _ in jobs], disabled=quiet) as progress:
        results = run_jobs(jobs, options, gpus, progress.update, notice)

    summaries = [r.as_dict() if not isinstance(r, Exception) else None for r in results]
    if as_json:
        print(json.dumps(summaries[0] if len(jobs) == 1 else summaries, indent=2))
    failures = [(source, r) for (source, _), r in zip(jobs, results, strict=True) if isinstance(r, Exception)]
    for result in results:
        if isinstance(result, Exception):
            continue
        if not quiet and not as_json:
            stderr.print(
                f"{result.frames} frames in {result.seconds:.1f}s ({result.fps:.2f} fps) -> {result.output} "
                f"({result.output_bytes / 1e6:.1f} MB)",
                highlight=False,
                soft_wrap=True,
            )
        for lost in result.lost:
            stderr.print(f"[red]lost:[/] {lost}", highlight=False, soft_wrap=True)
    if len(jobs) == 1 and failures:
        raise failures[0][1]
    for source, error in failures:
        stderr.print(f"[bold red]error:[/] {source}: {error}", highlight=False, soft_wrap=True)
    if failures:
        sys.exit(2)


class UpscaleProgress:
    """One rich progress bar per file on stderr: frames, frames/s, time left."""

    def __init__(self, names: list[str], disabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[fps]:.2f} fps"),
            TimeRemainingColumn(),
            console=stderr,
            disable=disabled,
            transient=True,
        )
        self.names = names
        self.tasks: dict[int, Any] = {}
        self.started: dict[int, float] = {}

    def __enter__(self) -> UpscaleProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def update(self, job: int, done: int, total: int | None) -> None:
        now = time.perf_counter()
        if job not in self.tasks:
            self.tasks[job] = self.progress.add_task(self.names[job], total=total, fps=0.0)
            self.started[job] = now
        elapsed = now - self.started[job]
        self.progress.update(self.tasks[job], completed=done, total=total, fps=done / elapsed if elapsed else 0.0)


@app.command("eval")
def eval_command(
    dataset: Annotated[
        str | None, _option("REDS4, Vid4-BI, Vid4-BD, UDM10-BD, Vimeo-90K-T-BI or Vimeo-90K-T-BD.", "Data")
    ] = None,
    data_root: Annotated[
        Path | None, _option("The dataset's folder (default: data/REDS, data/Vid4, ...).", "Data")
    ] = None,
    lq: Annotated[Path | None, _option("Low-quality clips (folders of frames) for a custom pair.", "Data")] = None,
    gt: Annotated[Path | None, _option("Ground-truth clips matching --lq by name.", "Data")] = None,
    y_channel: Annotated[bool, _option("Score BT.601 luma instead of RGB (for --lq/--gt).", "Data")] = False,
    crop_border: Annotated[int, _option("Pixels cropped from each edge before scoring.", "Data")] = 0,
    model: Annotated[str | None, _option("A model of the zoo (default reds4).", MODEL)] = None,
    weights: Annotated[Path | None, _option("A local checkpoint instead of the zoo.", MODEL)] = None,
    device: Annotated[str, _option("auto, cpu, cuda or cuda:N.", MODEL)] = "auto",
    precision: Annotated[str, _option("auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16.", MODEL)] = "auto",
    chunk_frames: Annotated[int, _option("Frames per window; 0 = each clip as one sequence.", WINDOWS)] = 0,
    chunk_overlap: Annotated[int, _option("Context frames each side of a window.", WINDOWS)] = 0,
    tile: Annotated[int, _option("Tile size in input pixels; 0 = whole frames.", WINDOWS)] = 0,
    tile_overlap: Annotated[int, _option("Input pixels neighbouring tiles share, blended.", WINDOWS)] = 16,
    json_file: Annotated[
        Path | None, _option("Write the results as JSON to this file (- for stdout).", None, "--json")
    ] = None,
    csv_file: Annotated[Path | None, _option("Write per-clip results as CSV to this file.", None, "--csv")] = None,
    quiet: Annotated[bool, _option("No table on the terminal.", None, "--quiet", "-q")] = False,
) -> None:
    """Score a model on a standard test set under the official protocol, beside the published number.

    Each clip runs as one sequence; outputs are rounded to 8 bits; PSNR and SSIM are averaged per
    clip, then over clips (REDS4 on RGB, the others on the Y channel). --precision, --chunk-frames
    and --tile show what each costs in dB.

    Example: vsrpp eval --dataset REDS4 --data-root data/REDS --model reds4
    """
    from .checkpoint import load_model
    from .engine import Engine, pick_device, pick_dtype
    from .evaluate import dataset_clips, evaluate, get_dataset, paired_clips

    if (dataset is None) == (lq is None and gt is None):
        raise ValueError("give either --dataset NAME or --lq DIR --gt DIR")
    if weights is not None and model is not None:
        raise ValueError("give either --model NAME or --weights PATH, not both")
    if dataset is not None:
        spec = get_dataset(dataset)
        clips = dataset_clips(spec, data_root or Path(spec.default_root))
        name, y, centre = spec.name, spec.y_channel, spec.centre_frame_only
    else:
        if lq is None or gt is None:
            raise ValueError("--lq and --gt go together")
        clips, name, y, centre, spec = paired_clips(lq, gt), f"{lq} vs {gt}", y_channel, False, None
    weights = weights or zoo.ensure(model or zoo.DEFAULT_MODEL, progress=not quiet, notice=lambda m: stderr.print(m))
    known = zoo.known_file(sha256_of(weights))
    torch_device = pick_device(device)
    engine = Engine(
        load_model(weights),
        torch_device,
        pick_dtype(precision, torch_device),
        tile,
        tile_overlap,
        warn=lambda m: stderr.print(f"[yellow]note:[/] {m}", highlight=False),
    )
    with ClipProgress(len(clips), quiet) as advance:
        report = evaluate(
            clips, engine, name, y, centre, chunk_frames, chunk_overlap, crop_border, on_clip=lambda score: advance()
        )
    if spec is not None and known is not None:
        report.published = known.scores.get(spec.score_key)
    facts = report.as_dict()
    facts.update(
        weights=str(weights),
        zoo_model=known.name if known else None,
        device=str(torch_device),
        precision=precision,
        chunk_frames=chunk_frames,
        chunk_overlap=chunk_overlap,
        tile=tile,
        crop_border=crop_border,
    )
    if json_file is not None:
        text = json.dumps(facts, indent=2)
        if str(json_file) == "-":
            print(text)
        else:
            json_file.write_text(text + "\n")
    if csv_file is not None:
        rows = ["clip,frames,psnr,ssim"] + [f"{c.clip},{c.frames},{c.psnr:.4f},{c.ssim:.4f}" for c in report.clips]
        csv_file.write_text("\n".join(rows) + "\n")
    if not quiet:
        show_report(report, facts)


def show_report(report: Any, facts: dict) -> None:
    channel = "Y" if report.y_channel else "RGB"
    title = f"{report.dataset} ({channel}, crop border {facts['crop_border']})"
    table = Table(title=title, title_justify="left")
    for column in ("clip", "frames", "PSNR", "SSIM"):
        table.add_column(column, justify="left" if column == "clip" else "right")
    for c in report.clips:
        table.add_row(c.clip, str(c.frames), f"{c.psnr:.4f}", f"{c.ssim:.4f}")
    table.add_section()
    table.add_row("average", str(sum(c.frames for c in report.clips)), f"{report.psnr:.4f}", f"{report.ssim:.4f}")
    if "published_psnr" in facts:
        table.add_row(
            f"published ({facts['zoo_model']})", "", f"{facts['published_psnr']:.4f}", f"{facts['published_ssim']:.4f}"
        )
        table.add_row("difference", "", f"{facts['psnr_difference']:+.4f}", f"{facts['ssim_difference']:+.4f}")
    stderr.print(table)


class ClipProgress:
    """A clips progress bar on stderr; the context gives a function that advances it by one."""

    def __init__(self, total: int, disabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]evaluating"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=stderr,
            disable=disabled,
            transient=True,
        )
        self.task = self.progress.add_task("clips", total=total)

    def __enter__(self) -> Callable[[], None]:
        self.progress.__enter__()
        return lambda: self.progress.advance(self.task)

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)


TRAIN, RECIPE, LAUNCH = "Data and output", "Recipe (defaults: the official REDS4 one)", "Processes and machines"


def _training_options(config: Path | None, overrides: dict[str, Any], base: dict[str, Any] | None = None) -> Any:
    from .train.config import TrainConfig

    start = TrainConfig.load(config) if config else TrainConfig()
    return start.updated({**(base or {}), **{k: v for k, v in overrides.items() if v is not None}})


@app.command()
def train(
    data_root: Annotated[Path, _option("REDS: train_sharp/ and train_sharp_bicubic/X4/ inside.", TRAIN)] = Path(
        "data/REDS"
    ),
    work_dir: Annotated[Path, _option("Checkpoints, logs and the resolved config go here.", TRAIN)] = Path(
        "runs/reds4"
    ),
    config: Annotated[Path | None, _option("A JSON file of settings (flags override it).", TRAIN)] = None,
    resume: Annotated[bool, _option("Continue the run in --work-dir from its latest checkpoint.", TRAIN)] = False,
    iters: Annotated[int | None, _option("Iterations (600000).", RECIPE)] = None,
    num_frames: Annotated[int | None, _option("Frames per clip (30).", RECIPE)] = None,
    patch_size: Annotated[int | None, _option("Ground-truth crop (256; 64 on the low-res side).", RECIPE)] = None,
    batch_size: Annotated[int | None, _option("Clips per process per iteration (1).", RECIPE)] = None,
    lr: Annotated[float | None, _option("Adam learning rate (1e-4), cosine to 1e-7.", RECIPE)] = None,
    fix_iter: Annotated[int | None, _option("Iterations with SPyNet frozen (5000).", RECIPE)] = None,
    mid_channels: Annotated[int | None, _option("Channels C (64).", RECIPE)] = None,
    num_blocks: Annotated[int | None, _option("Residual blocks per branch N (7).", RECIPE)] = None,
    val_interval: Annotated[
        int | None, _option("Validate on REDS4 every N iterations (5000; 0 = never).", RECIPE)
    ] = None,
    save_interval: Annotated[int | None, _option("Save a checkpoint every N iterations (5000).", RECIPE)] = None,
    log_interval: Annotated[int | None, _option("Log every N iterations (100).", RECIPE)] = None,
    seed: Annotated[int | None, _option("Seed of initial weights and samples (0).", RECIPE)] = None,
    amp: Annotated[str | None, _option("Mixed precision: off, fp16 or bf16 (off).", RECIPE)] = None,
    spynet: Annotated[Path | None, _option("SPyNet weights (default: the official one, fetched).", RECIPE)] = None,
    workers: Annotated[int | None, _option("Data-loading processes per training process (4).", RECIPE)] = None,
    stop_after: Annotated[int | None, _option("Stop after N iterations this run (resume later).", RECIPE)] = None,
    gpus: Annotated[int | None, _option("Processes (GPUs) on this machine (default: every GPU).", LAUNCH)] = None,
    device: Annotated[str, _option("auto, cuda or cpu (gloo; with --nproc).", LAUNCH)] = "auto",
    nproc: Annotated[int | None, _option("Processes on this machine (same as --gpus; for CPU runs).", LAUNCH)] = None,
    nnodes: Annotated[int, _option("Machines taking part.", LAUNCH)] = 1,
    node_rank: Annotated[int, _option("This machine's rank (0 for the first).", LAUNCH)] = 0,
    master_addr: Annotated[str | None, _option("Address of the first machine.", LAUNCH)] = None,
    master_port: Annotated[int | None, _option("Port on the first machine.", LAUNCH)] = None,
    rdzv_endpoint: Annotated[str | None, _option("host:port of a c10d rendezvous instead.", LAUNCH)] = None,
) -> None:
    """Train BasicVSR++ on REDS with the official recipe, on N GPUs (or CPU processes).

    Example: vsrpp train --data-root data/REDS --gpus 8 --work-dir runs/reds4
    """
    from .train.launch import default_nproc, launch

    overrides = dict(
        iters=iters,
        num_frames=num_frames,
        patch_size=patch_size,
        batch_size=batch_size,
        lr=lr,
        fix_iter=fix_iter,
        mid_channels=mid_channels,
        num_blocks=num_blocks,
        val_interval=val_interval,
        save_interval=save_interval,
        log_interval=log_interval,
        seed=seed,
        amp=amp,
        spynet=str(spynet) if spynet else None,
        workers=workers,
        stop_after=stop_after,
        device=device,
        data_root=str(data_root),
        work_dir=str(work_dir),
    )
    settings = _training_options(config, overrides)
    processes = nproc or gpus or default_nproc(device)
    launch(settings, processes, nnodes, node_rank, master_addr, master_port, rdzv_endpoint, resume)


@app.command()
def finetune(
    start: Annotated[str, _option("A zoo model name or a checkpoint path to start from.", TRAIN, "--from")],
    data: Annotated[Path, _option("Your high-quality videos or folders of frames (or GT/ and LQ/ pairs).", TRAIN)],
    work_dir: Annotated[Path, _option("Checkpoints, logs and the resolved config go here.", TRAIN)],
    degradation: Annotated[
        str | None, _option("How the low-quality side is made: bicubic, blur (x4) or compress (same size).", RECIPE)
    ] = None,
    codec: Annotated[str, _option("Encoder for --degradation compress.", RECIPE)] = "libx264",
    crf: Annotated[int, _option("Quality for --degradation compress (higher = worse).", RECIPE)] = 32,
    iters: Annotated[int, _option("Iterations.", RECIPE)] = 5000,
    lr: Annotated[float, _option("Adam learning rate, cosine to 1e-7.", RECIPE)] = 2e-5,
    num_frames: Annotated[int, _option("Frames per clip.", RECIPE)] = 15,
    patch_size: Annotated[int, _option("High-quality crop size.", RECIPE)] = 256,
    save_interval: Annotated[int, _option("Save every N iterations.", RECIPE)] = 500,
    log_interval: Annotated[int, _option("Log every N iterations.", RECIPE)] = 50,
    amp: Annotated[str, _option("Mixed precision: off, fp16 or bf16.", RECIPE)] = "off",
    workers: Annotated[int, _option("Data-loading processes per training process.", RECIPE)] = 4,
    stop_after: Annotated[int, _option("Stop after N iterations this run (resume later).", RECIPE)] = 0,
    resume: Annotated[bool, _option("Continue the run in --work-dir.", TRAIN)] = False,
    device: Annotated[str, _option("auto, cuda or cpu.", LAUNCH)] = "auto",
    nproc: Annotated[int | None, _option("Processes (GPUs) on this machine (default: every GPU).", LAUNCH)] = None,
) -> None:
    """Adapt a checkpoint to your own footage: the low-quality side is made on the fly.

    Videos in --data are decoded once into frames under --work-dir. x4 models learn from bicubic
    (as REDS) or blur-and-downsample (as Vimeo BD); same-size models from a real encode at --crf.

    Example: vsrpp finetune --from reds4 --data my_videos/ --work-dir runs/mine
    """
    from .checkpoint import infer_architecture
    from .train.launch import default_nproc, frames_from_videos, launch

    weights = Path(start) if Path(start).is_file() else zoo.ensure(start, notice=lambda m: stderr.print(m))
    arch = infer_architecture(read_checkpoint(weights).state_dict)
    x4 = arch["is_low_res_input"]
    settings = _training_options(
        None,
        {},
        base=dict(
            dataset="folders",
            data_root=str(frames_from_videos(data, work_dir)),
            work_dir=str(work_dir),
            init_from=str(weights),
            degradation=degradation or ("bicubic" if x4 else "compress"),
            compress_codec=codec,
            compress_crf=crf,
            iters=iters,
            lr=lr,
            num_frames=num_frames,
            patch_size=patch_size,
            save_interval=save_interval,
            log_interval=log_interval,
            amp=amp,
            workers=workers,
            stop_after=stop_after,
            fix_iter=0,
            val_interval=0,
            device=device,
            **arch,
        ),
    )
    launch(settings, nproc or default_nproc(device), resume=resume)


@app.command()
def bench(
    size: Annotated[str, _option("Input size HxW (output is 4x).")] = "180x320",
    frames: Annotated[int, _option("Frames per run.")] = 30,
    precision: Annotated[list[str] | None, _option("fp32, fp16, bf16; repeat for several (default fp32).")] = None,
    device: Annotated[str, _option("auto, cpu, cuda or cuda:N.")] = "auto",
    backend: Annotated[
        list[str] | None, _option("Deformable-conv backend(s): auto, triton, torch, torchvision, mmcv.")
    ] = None,
    weights: Annotated[
        Path | None, _option("A checkpoint (default: random weights; speed does not depend on them).")
    ] = None,
    graphs: Annotated[str, _option("CUDA graphs for the propagation steps: on, off or both (CUDA only).")] = "on",
    batch: Annotated[list[int] | None, _option("Clips per forward; repeat for several (default 1).")] = None,
    stages: Annotated[bool, _option("Also time each stage of the forward (SPyNet, a step, the DCN...).")] = False,
    compiled: Annotated[
        bool, _option("Also time the model with its alignment modules through torch.compile.", None, "--compile")
    ] = False,
    encoders: Annotated[
        list[str] | None, _option("Also time these encoders alone at 720p and 4K (e.g. libx264, h264_nvenc).")
    ] = None,
    baseline: Annotated[bool, _option("Also time the plain fp32 implementation.")] = True,
    pipeline: Annotated[bool, _option("Also time the whole upscale pipeline (decode, encode).")] = True,
    repeat: Annotated[int, _option("Timed runs after a warm-up; the best is kept.")] = 2,
    colour: Annotated[
        list[str] | None, _option("Pipeline colour conversion: device, swscale; repeat for both (default device).")
    ] = None,
    as_json: Annotated[bool, _option("Print the rows as JSON on stdout.", None, "--json")] = False,
) -> None:
    """Frames per second, milliseconds per frame and peak memory, for the network alone and for
    the whole upscale pipeline, with reduced precision checked against fp32.

    Example: vsrpp bench --size 540x960 --frames 30 --precision fp16 --precision bf16 --graphs both
    """
    from dataclasses import asdict

    from .bench import bench as run_bench
    from .bench import time_encoders

    try:
        h, w = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {size}: give HxW, e.g. 180x320") from None
    graph_modes = {"on": (True,), "off": (False,), "both": (False, True)}.get(graphs)
    if graph_modes is None:
        raise ValueError(f"--graphs {graphs}: choose on, off or both")
    with stderr.status("benchmarking..."):
        rows = run_bench(
            (h, w),
            frames,
            precision or ["fp32"],
            device,
            tuple(backend or ["auto"]),
            weights,
            baseline,
            pipeline,
            repeat,
            tuple(colour or ["device"]),
            graph_modes,
            tuple(batch or [1]),
            stages,
            (False, True) if compiled else (False,),
        )
        if encoders:
            rows += time_encoders([(720, 1280), (2160, 3840)], min(frames, 30), tuple(encoders))
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return
    table = Table(title=f"vsrpp bench: {h}x{w} -> {4 * h}x{4 * w}, {frames} frames", title_justify="left")
    columns = ("what", "precision", "backend", "graphs", "batch", "fps", "ms", "GPU MiB", "RSS MiB", "vs fp32")
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:3] else "right")
    for r in rows:
        guard = "" if r.psnr_vs_fp32 is None else f"{r.psnr_vs_fp32:.1f} dB, max {r.max_diff_vs_fp32:.2g}"
        if not r.finite:
            guard = "NON-FINITE " + guard
        what = {
            "model": "model, compiled" if r.compiled else "model",
            "pipeline": f"pipeline ({r.colour} colour)",
            "stage": r.stage,
            "encoder": f"encoder {r.stage}",
        }
        table.add_row(
            what.get(r.what, r.what),
            r.precision,
            r.backend,
            "on" if r.graphs else "off",
            str(r.batch),
            f"{r.fps:.3f}",
            f"{r.ms_per_frame:.2f}",
            "" if r.peak_gpu_mib is None else f"{r.peak_gpu_mib:.0f}",
            f"{r.peak_rss_mib:.0f}",
            guard,
        )
    stdout.print(table)
    stderr.print(f"device {rows[0].device}, {rows[0].threads} torch threads", highlight=False)


weights_app = typer.Typer(
    help="The model zoo: list, download, locate and verify official checkpoints.", no_args_is_help=True
)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def weights_list(as_json: Annotated[bool, _option("Print the zoo as JSON on stdout.", None, "--json")] = False) -> None:
    """Every model of the zoo: task, scale, size, and whether it is on this machine."""
    models = zoo.models().values()
    if as_json:
        print(json.dumps([zoo.describe(m) for m in models], indent=2))
        return
    table = Table(title=f"BasicVSR++ models (stored in {zoo.weights_dir()})", title_justify="left")
    for column in ("name", "task", "scale", "size", "here"):
        table.add_column(column, overflow="fold")
    for m in models:
        here = "yes" if zoo.path_of(m).is_file() else ("no" if m.url() else "by hand")
        name = f"{m.name}*" if m.name == zoo.DEFAULT_MODEL else m.name
        table.add_row(name, m.task, f"x{m.scale}", f"{zoo.parameter_count(m) / 1e6:.1f}M", here)
    table.caption = "* the default. `vsrpp weights list --json` has URLs, checksums, training data and scores."
    stdout.print(table)


@weights_app.command("download")
def weights_download(
    name: Annotated[str, typer.Argument(help="A model name from `vsrpp weights list`, or `all`.")],
    quiet: Annotated[bool, _option("No progress bar.", None, "--quiet", "-q")] = False,
) -> None:
    """Fetch a model (or all of them), verify its checksum, and keep it for later runs."""
    names = list(zoo.models()) if name == "all" else [zoo.get(name).name]
    failures = []
    for each in names:
        try:
            path = zoo.ensure(each, progress=not quiet, notice=lambda m: stderr.print(m))
            stderr.print(f"{each}: {path}", highlight=False)
        except ZooError as error:
            if len(names) == 1:
                raise
            failures.append(f"{each}: {error}")
    for failure in failures:
        stderr.print(f"[bold red]error:[/] {failure}", highlight=False, soft_wrap=True)
    if failures:
        sys.exit(2)


@weights_app.command("path")
def weights_path(name: Annotated[str, typer.Argument(help="A model name from `vsrpp weights list`.")]) -> None:
    """Where a model's file lives (or will, once downloaded)."""
    model = zoo.get(name)
    print(zoo.path_of(model))
    if not zoo.path_of(model).is_file():
        stderr.print(f"(not downloaded yet: vsrpp weights download {name})", highlight=False)


@weights_app.command("verify")
def weights_verify() -> None:
    """Re-hash every downloaded model against the checksum in its name."""
    bad = []
    for model in zoo.models().values():
        if zoo.path_of(model).is_file():
            intact = zoo.is_intact(model)
            stdout.print(f"{model.name}: {'ok' if intact else 'DAMAGED'}", highlight=False)
            if not intact:
                bad.append(model.name)
    if bad:
        raise ZooError(f"{', '.join(bad)} damaged; fetch again with `vsrpp weights download NAME`")


def describe_checkpoint(path: Path) -> dict[str, Any]:
    checkpoint = read_checkpoint(path)
    arch = infer_architecture(checkpoint.state_dict)
    model = BasicVSRPlusPlus(**arch)
    load_strict(model, checkpoint.state_dict, path)  # a file that will not load is reported, not described
    x4 = arch["is_low_res_input"]
    sha256 = sha256_of(path)
    known = zoo.known_file(sha256)
    return {
        "file": str(path),
        "size_bytes": path.stat().st_size,
        "sha256": sha256,
        "zoo_model": known.name if known else None,
        "architecture": f"BasicVSR++ C{arch['mid_channels']}/N{arch['num_blocks']}, "
        + ("4x upscaling" if x4 else "same-size output"),
        "mid_channels": arch["mid_channels"],
        "num_blocks": arch["num_blocks"],
        "scale": 4 if x4 else 1,
        "parameters": sum(p.numel() for p in model.parameters()),
        "task": known.task
        if known
        else ("video super-resolution (4x)" if x4 else "video restoration (deblurring, denoising or decompression)"),
        "layout": checkpoint.layout,
        "also_in_file": checkpoint.extras,
        "meta": checkpoint.meta,
    }


def _short(value: Any, limit: int = 60) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main() -> None:
    try:
        app()
    except USER_ERRORS as error:
        if _state["debug"]:
            raise
        stderr.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
