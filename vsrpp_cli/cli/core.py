"""What each command does with the values it was given: flags into library calls, results into
output (output.py). definition.py declares the commands and hands their values over as one
namespace, as httpie's core takes its parsed arguments. The library is imported inside each
command, so that `vsrpp --help` never imports torch.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

import typer

from ..errors import ExitStatus, UsageError, ZooError
from ..run.launch import Launch
from . import output
from .output import stderr


@dataclass
class State:
    debug: bool = False
    on_interrupt: str = ""  # what to tell a user who pressed Ctrl-C (how to continue)


state = State()


def check_tiles(tile: int, tile_overlap: int) -> None:
    if tile and tile <= 2 * tile_overlap:
        raise UsageError(
            f"--tile {tile} must be larger than twice --tile-overlap ({tile_overlap}); "
            f"e.g. --tile {max(64, 4 * tile_overlap)}"
        )


def check_plot_target(path: Path) -> None:
    """Checked before the work: a PNG name in a folder that exists, and matplotlib to draw it."""
    if path.suffix.lower() != ".png":
        raise UsageError(f"--plot {path}: name a .png file")
    if not path.parent.is_dir():
        raise UsageError(f"--plot {path}: no such folder {path.parent}")
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot draws with matplotlib, which is not installed: pip install 'vsrpp[plot]'")


# The model, window, tile, encoder and colour options that upscale and preview both take.
SHARED_OPTIONS = (
    "device", "precision", "chunk_frames", "chunk_overlap", "tile", "tile_overlap",
    "codec", "crf", "preset", "colour", "deinterlace", "fps", "deform_backend", "scene_cuts",
)  # fmt: skip


def shared_options(args: Namespace) -> dict:
    return {name: getattr(args, name) for name in SHARED_OPTIONS}


def launch_options(args: Namespace, nproc: int) -> Launch:
    """torchrun's options, as `train` and `upscale` both take them."""
    return Launch(nproc, args.nnodes, args.node_rank, args.master_addr, args.master_port, args.rdzv_endpoint,
                  getattr(args, "max_restarts", 0))  # fmt: skip


def chosen_weights(model: str | None, weights: Path | None, quiet: bool = False) -> Path:
    from ..weights.zoo import resolve_weights

    return resolve_weights(model, weights, progress=not quiet, notice=lambda m: stderr.print(m, highlight=False))


# ----------------------------------------------------------------------------- commands
def info(args: Namespace) -> None:
    """`vsrpp info`: what a checkpoint holds: architecture, parameter count, task, layout and metadata."""
    if args.backends:
        from ..network.deform_conv import backend_table
        from ..run.engine import PRECISIONS, slow_on_this_cpu

        table = backend_table()
        table["convolution"] = {  # a half precision is fast on a CPU only with oneDNN's kernels for it
            column: "slow" if column.startswith("cpu ") and slow_on_this_cpu(PRECISIONS[column[4:]]) else "fast"
            for column in table["works"]
        }
        if args.as_json:
            print(json.dumps(table, indent=2))
        else:
            output.backends_table(table)
        return
    if args.checkpoint is None:
        raise UsageError("give a CHECKPOINT to describe, or --backends")
    from ..weights.checkpoint import describe

    facts = describe(args.checkpoint)
    if args.as_json:
        print(json.dumps(facts, indent=2, default=str))
    else:
        output.facts_table(facts)


def upscale(args: Namespace) -> None:
    """`vsrpp upscale`: one or several inputs, in one process or shared among workers."""
    if len(args.paths) < 2:
        raise UsageError("give an INPUT and an OUTPUT, e.g. vsrpp upscale in.mp4 out.mp4")
    check_tiles(args.tile, args.tile_overlap)
    *inputs, destination = args.paths
    from ..run.jobs import check_encoder, plan_jobs, run_jobs
    from ..run.pipeline import Options
    from ..video.inputs import is_live

    jobs = plan_jobs(inputs, destination)
    check_encoder([target for _, target in jobs], args.codec, args.crf, args.preset, args.pix_fmt, args.output_format)
    options = Options(
        weights=chosen_weights(args.model, args.weights, args.quiet),
        **shared_options(args),
        pix_fmt=args.pix_fmt,
        overwrite=args.overwrite,
        resume=args.resume,
        batch=args.batch,
        graphs=args.graphs,
        deterministic=args.deterministic,
        compile=args.compile,
        segment_frames=args.segment_frames,
        strength=args.strength,
        format=args.output_format,
    )
    again = [arg for arg in sys.argv[1:] if arg not in ("--overwrite", "--resume")]
    if str(destination) != "-" and not is_live(inputs[0]):  # a one-pass run keeps nothing
        state.on_interrupt = (
            f": finished segments are kept; continue with `{shlex.join(['vsrpp', *again, '--resume'])}`"
        )
    where = launch_options(args, args.nproc_per_node)
    if len(jobs) > 1 and where.resolved().nnodes > 1:
        raise UsageError("--nnodes: machines share the segments of one input; give one INPUT")
    with output.UpscaleProgress([source.name for source, _ in jobs], disabled=args.quiet) as progress:
        results = run_jobs(jobs, options, where, progress.update, output.notice_printer(args.quiet))

    if args.as_json:  # on standard error where standard output carries the video
        summaries = [None if isinstance(r, Exception) else r.as_dict() for r in results]
        print(json.dumps(summaries[0] if len(jobs) == 1 else summaries, indent=2),
              file=sys.stderr if str(destination) == "-" else sys.stdout)  # fmt: skip
    for result in results:
        if not isinstance(result, Exception):
            output.upscale_summary(result, lost_only=args.quiet or args.as_json)
    failures = [(source, r) for (source, _), r in zip(jobs, results, strict=True) if isinstance(r, Exception)]
    if len(jobs) == 1 and failures:
        raise failures[0][1]
    for source, error in failures:
        output.error_line(f"{source}: {error}")
    if failures:
        raise typer.Exit(ExitStatus.ERROR)


def preview(args: Namespace) -> None:
    """`vsrpp preview`: a few moments upscaled exactly as the whole run would upscale them."""
    for value in args.strength or ():
        if not 0 <= value <= 1:
            raise UsageError(f"--strength {value}: give a value from 0 to 1")
    check_tiles(args.tile, args.tile_overlap)
    from ..quality.preview import Setting, parse_time
    from ..quality.preview import preview as run_preview
    from ..run.jobs import check_encoder
    from ..run.pipeline import Options

    times = [parse_time(text) for text in args.at or ()]
    check_encoder([Path("estimate.mp4")], args.codec, args.crf, args.preset, None)
    chosen = [Setting(chosen_weights(name, None, args.quiet), name) for name in args.model or ()]
    chosen += [Setting(chosen_weights(None, path, args.quiet)) for path in args.weights or ()]
    if not chosen:
        chosen = [Setting(chosen_weights(None, None, args.quiet), "reds4")]
    settings = [Setting(s.weights, s.model, value) for s in chosen for value in (args.strength or [1.0])]
    options = Options(weights=settings[0].weights, **shared_options(args))
    folder = args.output_dir or Path(f"{args.source.stem}-preview")
    with contextlib.nullcontext() if args.quiet else stderr.status("upscaling the moments..."):
        report = run_preview(args.source, folder, settings, options, times, output.notice_printer(args.quiet))
    if args.as_json:
        print(json.dumps(report.as_dict(), indent=2))
    elif not args.quiet:
        output.preview_report(report)


def evaluate(args: Namespace) -> None:
    """`vsrpp eval`: a model scored on a test set under the official protocol."""
    if args.report_file is not None and args.report_file.suffix.lower() not in (".json", ".csv"):
        raise UsageError(f"--report {args.report_file}: name a .json or a .csv file")
    if args.plot is not None:
        check_plot_target(args.plot)
    check_tiles(args.tile, args.tile_overlap)
    from ..quality.evaluate import EvalPlan, score
    from ..run.engine import build_engine, check_backend, pick_device, pick_dtype
    from ..run.options import Options

    plan = EvalPlan.make(args.dataset, args.data_root, args.lq, args.gt, args.y_channel)
    chosen = chosen_weights(args.model, args.weights, args.quiet)
    torch_device = pick_device(args.device)
    dtype = pick_dtype(args.precision, torch_device)
    check_backend(args.deform_backend, torch_device, dtype)
    options = Options(weights=chosen, precision=args.precision, tile=args.tile, tile_overlap=args.tile_overlap,
                      strength=args.strength, deform_backend=args.deform_backend)  # fmt: skip
    engine = build_engine(options, chosen, None, torch_device, args.tile, 0, output.notice_printer(args.quiet), 1)
    with output.ClipProgress(len(plan.clips), args.quiet) as advance:
        report, facts = score(
            plan, chosen, engine, args.chunk_frames, args.chunk_overlap, args.crop_border, lambda _: advance()
        )
    if args.report_file is not None:
        text = (
            json.dumps(facts, indent=2) + "\n"
            if args.report_file.suffix.lower() == ".json"
            else output.eval_csv(report)
        )
        args.report_file.write_text(text)
    if args.plot is not None:
        from ..quality.plots import psnr_per_frame

        psnr_per_frame(report, args.plot)
    if args.as_json:
        print(json.dumps(facts, indent=2))
    if not args.quiet:  # on stderr: beside --json too
        output.eval_report(report, facts)


def train(args: Namespace) -> None:
    """`vsrpp train`: flags over the config file over the recipe, then the launch."""
    from ..train.config import TrainConfig
    from ..train.launch import default_nproc, launch

    flags = dict(
        iters=args.iters,
        num_frames=args.num_frames,
        patch_size=args.patch_size,
        batch_size=args.batch_size,
        lr=args.lr,
        fix_iter=args.fix_iter,
        mid_channels=args.mid_channels,
        num_blocks=args.num_blocks,
        val_interval=args.val_interval,
        save_interval=args.save_interval,
        log_interval=args.log_interval,
        seed=args.seed,
        amp=args.amp,
        spynet=str(args.spynet) if args.spynet else None,
        workers=args.workers,
        stop_after=args.stop_after,
        device=args.device,
        data_root=str(args.data_root) if args.data_root else None,
        work_dir=str(args.work_dir) if args.work_dir else None,
    )
    settings = TrainConfig.from_sources(args.config, flags)
    processes = args.nproc_per_node or default_nproc(settings.device)
    launch(settings, launch_options(args, processes), args.resume, notice=output.notice_printer(False))


def finetune(args: Namespace) -> None:
    """`vsrpp finetune`: the checkpoint's architecture, the user's videos as frames, then the launch."""
    from ..train.config import TrainConfig
    from ..train.launch import default_nproc, frames_from_videos, launch
    from ..weights.checkpoint import infer_architecture, read_checkpoint

    as_file = Path(args.start)
    looks_like_file = as_file.suffix or "/" in args.start
    if looks_like_file and not as_file.is_file():
        raise UsageError(f"--from {args.start}: no such checkpoint file; give a file or a zoo model name")
    weights = chosen_weights(None, as_file) if as_file.is_file() else chosen_weights(args.start, None)
    arch = infer_architecture(read_checkpoint(weights).state_dict)
    recipe = dict(
        compress_codec=args.codec,
        compress_crf=args.crf,
        iters=args.iters,
        lr=args.lr,
        num_frames=args.num_frames,
        patch_size=args.patch_size,
        save_interval=args.save_interval,
        log_interval=args.log_interval,
        amp=args.amp,
        workers=args.workers,
        stop_after=args.stop_after,
        device=args.device,
        degradation=args.degradation,
    )
    settings = TrainConfig.finetune(
        weights, frames_from_videos(args.data, args.work_dir), args.work_dir, arch, **recipe
    )
    where = Launch(nproc=args.nproc_per_node or default_nproc(args.device))
    launch(settings, where, resume=args.resume, notice=output.notice_printer(False))


def bench(args: Namespace) -> None:
    """`vsrpp bench`: frames/s, ms per frame and peak memory, of the network and of the pipeline."""
    from dataclasses import asdict

    from ..quality.bench import bench as run_bench
    from ..quality.bench import time_encoders

    if args.plot is not None:
        check_plot_target(args.plot)
    h, w = (int(v) for v in args.size.lower().split("x"))
    graph_modes = {"on": (True,), "off": (False,), "both": (False, True)}[args.graphs]
    with stderr.status("benchmarking..."):
        rows = run_bench(
            (h, w),
            args.frames,
            list(args.precision or ["fp32"]),
            args.device,
            tuple(args.backend or ["auto"]),
            args.weights,
            args.baseline,
            args.pipeline,
            args.repeat,
            tuple(args.colour or ["device"]),
            graph_modes,
            tuple(args.batch or [1]),
            args.stages,
            (False, True) if args.compiled else (False,),
            warn=output.notice_printer(False),
        )
        if args.encoders:
            rows += time_encoders([(720, 1280), (2160, 3840)], min(args.frames, 30), tuple(args.encoders))
    title = f"vsrpp bench: {h}x{w} -> {4 * h}x{4 * w}, {args.frames} frames"
    if args.plot is not None:
        from ..quality.plots import frames_per_second

        frames_per_second(rows, args.plot, f"{title}, {rows[0].device}")
    if args.as_json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        output.bench_table(rows, title)


def weights_list(args: Namespace) -> None:
    """`vsrpp weights list`: every model of the zoo: task, scale, size, and whether it is on this machine."""
    from ..weights import zoo

    models = [zoo.describe(m) for m in zoo.models().values()]
    if args.as_json:
        print(json.dumps(models, indent=2))
    else:
        output.zoo_table(models, str(zoo.weights_dir()), zoo.DEFAULT_MODEL)


def weights_download(args: Namespace) -> None:
    """`vsrpp weights download`: a model (or all of them) fetched and its checksum verified."""
    from ..weights import zoo

    names = list(zoo.models()) if args.name == "all" else [zoo.get(args.name).name]
    failures = []
    for each in names:
        try:
            path = zoo.ensure(each, progress=not args.quiet, notice=lambda m: stderr.print(m))
            stderr.print(f"{each}: {path}", highlight=False)
        except ZooError as error:
            if len(names) == 1:
                raise
            failures.append(f"{each}: {error}")
    for failure in failures:
        output.error_line(failure)
    if failures:
        raise typer.Exit(ExitStatus.ERROR)


def weights_path(args: Namespace) -> None:
    """`vsrpp weights path`: where a model's file lives (or will, once downloaded)."""
    from ..weights import zoo

    model = zoo.get(args.name)
    print(zoo.path_of(model))
    if not zoo.path_of(model).is_file():
        stderr.print(f"(not downloaded yet: vsrpp weights download {args.name})", highlight=False)


def weights_verify(args: Namespace) -> None:
    """`vsrpp weights verify`: every downloaded model re-hashed against the checksum in its name."""
    from ..weights import zoo

    results = {m.name: zoo.is_intact(m) for m in zoo.models().values() if zoo.path_of(m).is_file()}
    if args.as_json:
        print(json.dumps({"folder": str(zoo.weights_dir()), "models": results}, indent=2))
    for name, intact in results.items():
        if not args.as_json:
            output.stdout.print(f"{name}: {'ok' if intact else 'DAMAGED'}", highlight=False)
    if not results and not args.as_json:
        stderr.print(
            f"no models downloaded in {zoo.weights_dir()}: nothing to verify (`vsrpp weights download NAME`)",
            highlight=False,
            soft_wrap=True,
        )
    elif not args.as_json:
        stderr.print(f"{len(results)} model(s) checked in {zoo.weights_dir()}", highlight=False, soft_wrap=True)
    bad = [name for name, intact in results.items() if not intact]
    if bad:
        raise ZooError(f"{', '.join(bad)} damaged; fetch again with `vsrpp weights download NAME`")
