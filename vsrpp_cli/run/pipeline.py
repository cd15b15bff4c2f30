"""`vsrpp upscale`: one pipeline at any scale.

A run is a plan (segments of whole windows), workers that each take a whole segment at a time
(decode its frames with context, run its windows, encode it with a fresh encoder, send it), and
a writer that stores what they send in the run's folder and, at the end, joins the segments in
order with the audio and subtitles, into a temporary file moved into place.

One process runs one worker in a thread beside the writer; `--nproc-per-node N` and `--nnodes M`
run N x M worker processes through torch.distributed's elastic launcher (launch.py), and the
writer stays in the launching process of the first machine. Writer and workers meet through
the c10d store (coordination.py); the workers are worker.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import OutputError, VsrppError, WorkerError, os_error_advice
from ..video.colour import YuvTarget
from ..video.encode import EncoderSettings, container_for, muxer_target
from ..video.inputs import is_live, open_source
from ..video.mux import Muxer
from ..video.shots import check_setting, cuts_notice, find_cuts
from ..weights.checkpoint import load_model
from ..weights.hashing import sample_sha256, sha256_of
from . import failpoints
from .engine import PRECISIONS, check_backend, pick_device, pick_dtype
from .failpoints import failpoint
from .folder import RunFolder, remove
from .launch import Launch, require_secret
from .outputs import check_output, finish, join_frame_segments, partial_folder, path_bytes, temporary_path
from .sizing import MIN_TILE, plan, tiles_notice, window_shape
from .threads import threads_per_process
from .windows import WindowTable
from .worker import Local
from .workers import run_shared, run_workers_here, work_for_first_machine, workers_device
from .writer import Writer


@dataclass
class Options:
    weights: Path
    device: str = "auto"
    precision: str = "auto"
    chunk_frames: int = 0  # 0: sized to the device
    chunk_overlap: int = 8
    tile: int = 0
    tile_overlap: int = 16
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    overwrite: bool = False
    resume: bool = False
    colour: str = "device"  # where YUV <-> RGB runs: "device" (with the network) or "swscale" (FFmpeg's, CPU)
    batch: int = 0  # windows per forward; 0: from free memory on CUDA, 1 on CPU
    graphs: bool = True  # CUDA graphs for the propagation steps (CUDA only)
    compile: bool = False  # torch.compile the alignment modules (pays on long runs in bf16 on the CPU)
    deinterlace: str = "auto"  # interlaced input: "auto" (bwdif when the stream is interlaced), "bwdif", "yadif", "off"
    segment_frames: int = 0  # output frames per segment; 0: sizing.plan's default
    strength: float = 1.0  # 0: the source enlarged as the network's skip connection does; 1: the network
    fps: float | None = None  # the frame rate of inputs whose frames carry no times (raw streams, frame folders)
    deterministic: bool | None = None  # the same bits in every process (engine.make_deterministic); None: off
    deform_backend: str = "auto"  # the deformable conv's kernel (network/deform_conv.py)
    format: str | None = None  # what `-` (standard output) is written as (encode.STREAM_FORMATS); None: Matroska
    scene_cuts: str = "auto"  # shots.py: "auto" (found in the frames), "off", or a file of cuts


@dataclass
class Summary:
    input: str
    output: str
    frames: int = 0
    seconds: float = 0.0
    output_bytes: int = 0
    device: str = ""
    precision: str = ""
    chunk_frames: int = 0
    chunk_overlap: int = 0
    batch: int = 1
    tile: int = 0
    colour: str = ""  # "device" or "swscale"
    windows_resumed: int = 0
    fp32_fallbacks: int = 0
    lost: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)  # each worker's segments, frames and fps
    timings: dict[str, float] = field(default_factory=dict)  # the writer's: saving segments, joining them
    latency_frames: int | None = None  # a one-pass run's largest lag: frames read before a frame came out
    cuts: list[int] = field(default_factory=list)  # the frames that start a shot (windows stop there)
    written_by: str = ""  # another machine's workers: the first machine, which writes the output

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "fps": round(self.fps, 3), "seconds": round(self.seconds, 3)}

    def teller(self, notice: Callable[[str], None]) -> Callable[[str], None]:
        """What a run says: each notice once, kept in the summary and passed to `notice`."""

        def tell(message: str) -> None:
            if message not in self.notices:
                self.notices.append(message)
                notice(message)

        return tell


def upscale(
    source_path: Path,
    output: Path,
    options: Options,
    on_progress: Callable[[float, int | None], None] = lambda done, total: None,
    notice: Callable[[str], None] = lambda message: None,
    launch: Launch | None = None,
) -> Summary:
    launch = (launch or Launch()).resolved()
    require_secret(launch)
    check_setting(options.scene_cuts)
    failpoints.start_run()
    if is_live(source_path) or str(output) == "-":  # a pipe in or out: one pass (stream.py)
        from .stream import upscale_stream

        return upscale_stream(source_path, output, options, on_progress, notice, launch)
    if launch.node_rank > 0:
        began = time.perf_counter()
        notice(f"working for the first machine ({launch.host}); it writes {output.name}")
        reports = work_for_first_machine(Local(str(source_path), str(options.weights), str(partial_folder(output)),
                                               options.device, threads_per_process(launch.nproc)), launch)  # fmt: skip
        helped = Summary(str(source_path), str(output), written_by=launch.host)
        summarise(helped, reports, 0, notice)
        helped.frames, helped.seconds = sum(r["frames"] for r in reports), time.perf_counter() - began
        return helped
    started = time.perf_counter()
    if output.exists() and source_path.exists() and output.resolve() == source_path.resolve():
        raise OutputError(f"{output} is the input itself; choose another output")
    container_format = container_for(output, options.format)
    check_output(output, options.overwrite)
    summary = Summary(str(source_path), str(output), colour=options.colour, chunk_overlap=options.chunk_overlap)
    tell = summary.teller(notice)
    if options.resume and not partial_folder(output).exists():
        tell(f"--resume: no interrupted run of {output.name} was found; starting from the beginning")
    if 0 < options.tile < MIN_TILE:
        tell(f"--tile {options.tile}: every tile still runs the network's fixed work (flows on at least 64x64 "
             f"pixels), so tiles under {MIN_TILE} px are many times slower; 256 or more is usual")  # fmt: skip
    source = open_source(source_path, options.deinterlace, tell, options.fps)
    info = source.info
    shared = launch.processes > 1
    device = workers_device(options.device, launch) if shared else pick_device(options.device)
    dtype = pick_dtype(options.precision, device)
    summary.device, summary.precision = str(device), next(n for n, v in PRECISIONS.items() if v == dtype)
    check_backend(options.deform_backend, device, dtype)
    model = load_model(options.weights)
    size = (info.width * model.scale, info.height * model.scale)
    settings = EncoderSettings(container_format, options.codec, options.crf, options.preset, options.pix_fmt)
    times = source.frame_times() if shared else None  # workers seek by them; one process reads on
    total = len(times) if times else info.frame_count or info.frame_estimate
    on_progress(0, total)
    temporary = temporary_path(output)
    made: Path | None = None  # the temporary output, once this run owns it (cleanup removes only that)
    muxer: Muxer | None = None
    store: RunFolder | None = None
    try:
        # Frames for the encoder leave the device as YUV when it takes a format colour.py makes;
        # making that encoder refuses bad encoder settings before any work.
        target = muxer_target(settings, info, size) if container_format and options.colour == "device" else None
        run = fingerprint(source_path, source, options, summary, target)
        chunk, tile = window_shape(device, info.width, info.height, model.mid_channels, dtype.itemsize, options)
        if tile != options.tile:
            tell(tiles_notice(info, chunk + 2 * options.chunk_overlap, tile))

        def first_plan() -> dict[str, Any]:  # for a new run (a resumed one keeps its own)
            new = plan(chunk, options.segment_frames, container_format is None, total, launch.processes)
            new["tile"] = tile
            # Only where asked, single or shared alike: each frame comes from one process, so
            # workers need not compute alike for the join. Kept with the plan, so a resume
            # computes as the run began.
            new["deterministic"] = bool(options.deterministic)
            # A shared run plans its segments, so it finds the cuts first (one decoding pass); one
            # process finds them in the frames as its worker reads them (None: not planned).
            planned = shared or options.scene_cuts != "auto"
            new["cuts"] = find_cuts(options.scene_cuts, source, total if times else None, tell) if planned else None
            return new

        # The run's lock first: a run refused because another is live must touch nothing of its.
        store = RunFolder.open(partial_folder(output), run, first_plan, options.resume, options.overwrite)
        # The final file is opened now, so that its container and audio settings are refused
        # before any work rather than after hours; it is written at the end.
        made = temporary
        if container_format is None:
            remove(temporary)  # a folder left by a killed run
            temporary.mkdir()
        else:
            muxer = Muxer(temporary, settings, info, size, source_path if source_path.is_file() else None, tell)
        options = replace(options, deterministic=store.plan.get("deterministic", bool(options.deterministic)))
        committed = store.closed_segments()
        per_segment = store.plan["windows_per_segment"]
        summary.chunk_frames, summary.cuts = store.plan["chunk_frames"], store.plan.get("cuts") or []
        table = WindowTable(summary.chunk_frames, options.chunk_overlap, summary.cuts, len(times) if times else None)
        segments = -(-len(table) // per_segment) if times else None
        job = {
            "run_id": hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()[:16],
            "options": {**asdict(options), "weights": str(options.weights)},
            "fingerprint": run,
            "plan": store.plan,
            "times": times,
            "total": len(times) if times else None,
            "segments": segments,
            "committed": sorted(committed),
            "target": asdict(target) if target else None,
            "size": list(size),
            "container_format": container_format,
        }
        done = sum(store.segment_frame_count(segment) for segment in committed)
        writer = Writer(store, job, done, total, on_progress, tell)
        # This machine's cores shared among its workers (oversubscribed OpenMP threads spin: threads.py).
        threads = threads_per_process(launch.nproc)
        local = Local(str(source_path), str(options.weights), str(store.folder), options.device, threads)
        reports = run_shared(job, local, writer, launch) if shared else run_workers_here(job, local, writer, tell)
        expected = set(range(segments)) if segments is not None else set()
        if not expected <= store.closed_segments():
            raise WorkerError("the workers ended with segments missing; run the same command with --resume")
        failpoint("join")
        joining = time.perf_counter()
        if muxer is not None:
            muxer.mux(store.video_segments())
            muxer.close()
        else:
            join_frame_segments(store.frame_segments(), temporary)
        failpoint("rename")
        finish(temporary, output)
        summary.timings = {
            "seconds_saving": round(writer.seconds_saving, 4),
            "segments_saved": len(writer.saved),
            "seconds_joining": round(time.perf_counter() - joining, 4),
            "segments": len(store.closed_segments()),
        }
    except OSError as error:
        cleanup(muxer, made, store, notice)
        kept = store is not None and store.folder.exists()  # (cleanup removes a folder with nothing in it)
        advice = os_error_advice(error, output.parent, f"{output.name} or its finished segments", kept)
        if advice is None:
            raise
        raise advice from None
    except BaseException:
        cleanup(muxer, made, store, notice)
        raise
    store.remove()
    summarise(summary, reports, len(committed) * per_segment, tell)
    summary.frames = writer.done
    summary.seconds = time.perf_counter() - started
    summary.output_bytes = path_bytes(output)
    return summary


def summarise(summary: Summary, reports: list[dict], resumed: int, tell: Callable[[str], None]) -> None:
    summary.windows_resumed = resumed + sum(r["windows_resumed"] for r in reports)
    summary.fp32_fallbacks = sum(r["fp32_fallbacks"] for r in reports)
    summary.tile = min((r["tile"] for r in reports), default=0)
    summary.batch = max((r["batch"] for r in reports), default=1)
    summary.lost = list(dict.fromkeys(line for r in reports for line in r["lost"]))
    found = [r["cuts"] for r in reports if r.get("cuts") is not None]  # found as read (one process)
    if found:
        summary.cuts = found[0]
        if summary.cuts:
            tell(cuts_notice(summary.cuts))
    for message in (m for r in reports for m in r["notices"]):
        tell(message)
    if len(reports) > 1:
        summary.workers = [{**r, "fps": round(r["frames"] / r["seconds"], 3) if r["seconds"] else 0.0}
                           for r in reports]  # fmt: skip


def cleanup(muxer: Muxer | None, temporary: Path | None, store: RunFolder | None, notice: Callable[[str], None]) -> None:
    """After a failure or an interruption: what is partial goes, closed segments and stored
    windows stay for --resume (and the folder goes too when it holds nothing). Never raises over
    the failure it follows: what it could not remove is said in one line."""
    steps: list[tuple[str, Callable[[], None]]] = []
    if temporary is not None:
        steps.append(("the temporary output", lambda: remove(temporary)))
    if muxer is not None:
        steps.insert(0, ("the output being joined", muxer.abort))
    if store is not None:
        steps += [("unfinished files", store.remove_partials), ("the run's folder", store.remove_if_empty),
                  ("the run's lock", store.unlock)]  # fmt: skip
    left = []
    for what, step in steps:
        try:
            step()
        except Exception as error:
            left.append(f"{what} ({os.strerror(error.errno) if isinstance(error, OSError) else error})")
    if left:
        notice(f"could not remove {', '.join(left)}")


def fingerprint(
    source_path: Path, source: Any, options: Options, summary: Summary, target: YuvTarget | None
) -> dict[str, Any]:
    """Everything that changes the output's frames or packets: a resumed run must match it."""
    return {
        "input": str(source_path.resolve()),
        "input_size": source_path.stat().st_size if source_path.is_file() else len(source.files),
        "input_sample": sample_sha256(source_path, source.files or None),
        "input_mtime_ns": source_path.stat().st_mtime_ns,
        "weights_sha256": sha256_of(options.weights),
        "chunk_frames": options.chunk_frames,  # as asked (0: sized to the device; the plan has the size)
        "chunk_overlap": options.chunk_overlap,
        "tile": options.tile,
        "tile_overlap": options.tile_overlap,
        "precision": summary.precision,
        "device": summary.device.split(":")[0],
        "colour": summary.colour,
        "stored_format": target.format if target else "rgb",
        "codec": options.codec,
        "crf": options.crf,
        "preset": options.preset,
        "pix_fmt": options.pix_fmt,
        "deinterlace": options.deinterlace,
        "segment_frames": options.segment_frames,
        "strength": options.strength,
        "fps": options.fps,
        "deterministic": options.deterministic,  # as asked (None: automatic; the plan holds what it meant)
        "deform_backend": options.deform_backend,
        "scene_cuts": cuts if (cuts := options.scene_cuts) in ("auto", "off") else sha256_of(Path(cuts)),
        "vsrpp": __version__,
    }


__all__ = ["Options", "Summary", "VsrppError", "upscale"]
