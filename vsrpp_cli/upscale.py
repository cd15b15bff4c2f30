"""`vsrpp upscale`: decode -> windows -> network -> encode, streamed through bounded queues.

Decoding runs in one thread, encoding in another, the network in the caller's: they overlap,
and no stage holds more than a window (chunk + 2 * overlap frames) plus two short queues, so
memory does not grow with the video. The output is written beside its final path under a
temporary name and moved into place at the end; finished windows are kept (resume.py) until then.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .checkpoint import CheckpointError, load_model, sha256_of
from .decode import FRAME_EXTENSIONS, Frame, InputError, VideoInfo, open_source
from .encode import CONTAINERS, FrameFolderSink, OutputError, VideoSink, container_for
from .engine import PRECISIONS, Engine, pick_device, pick_dtype
from .resume import ResumeError, WindowStore
from .windows import Window, temporal_windows

VIDEO_EXTENSIONS = {
    ".mp4",
    ".mkv",
    ".mov",
    ".webm",
    ".avi",
    ".m4v",
    ".ts",
    ".mts",
    ".m2ts",
    ".flv",
    ".wmv",
    ".mpg",
    ".mpeg",
    ".y4m",
    ".3gp",
}
QUEUE_FRAMES = 8  # decoded frames waiting for the network, and upscaled ones waiting for the encoder


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

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "fps": round(self.fps, 3), "seconds": round(self.seconds, 3)}


def upscale(
    source_path: Path,
    output: Path,
    options: Options,
    on_progress: Callable[[int, int | None], None] = lambda done, total: None,
    notice: Callable[[str], None] = lambda message: None,
) -> Summary:
    started = time.perf_counter()
    if output.exists() and source_path.exists() and output.resolve() == source_path.resolve():
        raise OutputError(f"{output} is the input itself; choose another output")
    container_format = container_for(output)
    check_output(output, options.overwrite)
    source = open_source(source_path)
    info = source.info
    device = pick_device(options.device)
    dtype = pick_dtype(options.precision, device)
    precision_name = next(name for name, value in PRECISIONS.items() if value == dtype)
    colour_on_device = colour_runs_on_device(options.colour)
    summary = Summary(
        str(source_path),
        str(output),
        device=str(device),
        precision=precision_name,
        colour="device" if colour_on_device else "swscale",
    )

    def tell(message: str) -> None:
        summary.notices.append(message)
        notice(message)

    model = load_model(options.weights)
    chunk = options.chunk_frames or default_chunk(device, info.width, info.height, model.mid_channels)
    window_frames = chunk + 2 * options.chunk_overlap
    batch = options.batch or default_batch(device, info.width, info.height, model.mid_channels, window_frames)
    engine = Engine(
        model,
        device,
        dtype,
        options.tile,
        options.tile_overlap,
        warn=tell,
        graphs=options.graphs,
        batch=batch,
        compile=options.compile,
    )
    summary.chunk_frames, summary.chunk_overlap, summary.batch = chunk, options.chunk_overlap, batch

    temporary = temporary_path(output)
    try:
        sink = make_sink(temporary, container_format, source_path, info, engine.scale, options, tell)
    except BaseException:
        remove(temporary)
        raise
    # Frames for the encoder leave the device as YUV when it takes a format colour.py makes.
    target = sink.planes_target if colour_on_device and isinstance(sink, VideoSink) else None
    fingerprint = {
        "input": str(source_path.resolve()),
        "input_size": source_path.stat().st_size if source_path.is_file() else len(source.files),
        "input_mtime_ns": source_path.stat().st_mtime_ns,
        "weights_sha256": sha256_of(options.weights),
        "chunk_frames": chunk,
        "chunk_overlap": options.chunk_overlap,
        "tile": options.tile,
        "tile_overlap": options.tile_overlap,
        "precision": precision_name,
        "device": device.type,
        "colour": summary.colour,
        "stored_format": target.format if target else "rgb",
        "vsrpp": __version__,
    }
    writer = BackgroundWriter(sink)
    store = None
    try:
        store = WindowStore.open(partial_folder(output), fingerprint, options.resume, options.overwrite)
        frames = in_background(source.frames(keep_yuv=colour_on_device))
        pending: list[Window[Frame]] = []  # windows of one length, waiting to fill a batch

        def write(window: Window[Frame], upscaled: list) -> None:
            for frame, image in zip(window.items[window.keep], upscaled, strict=True):
                writer.put(image, frame.pts)
            summary.frames += window.keep.stop - window.keep.start
            on_progress(summary.frames, info.frame_count)

        def run_pending() -> None:
            if not pending:
                return
            runs = [([f.image for f in w.items], w.keep) for w in pending]
            for window, upscaled in zip(pending, engine.upscale_many(runs, info.bit_depth, target), strict=True):
                store.save(window.index, upscaled)
                write(window, upscaled)
            pending.clear()

        for window in temporal_windows(frames, chunk, options.chunk_overlap):
            if store.has(window.index):
                run_pending()  # in order: the writer takes windows as they come
                write(window, store.load(window.index, target))
                summary.windows_resumed += 1
                continue
            if pending and len(pending[0].items) != len(window.items):
                run_pending()
            pending.append(window)
            if len(pending) >= engine.batch:
                run_pending()
        run_pending()
        writer.close()
    except BaseException:
        writer.abort()
        remove(temporary)
        if store is not None:
            store.remove_if_empty()  # finished windows stay for --resume
        raise
    finish(temporary, output)
    store.remove()
    summary.lost = source.report.lost
    summary.fp32_fallbacks = engine.fp32_fallbacks
    summary.tile = engine.tile
    summary.seconds = time.perf_counter() - started
    summary.output_bytes = path_bytes(output)
    return summary


def colour_runs_on_device(choice: str) -> bool:
    if choice not in ("device", "swscale"):
        raise ValueError(f"--colour {choice}: choose device or swscale")
    return choice == "device"


def make_sink(
    temporary: Path,
    container_format: str | None,
    source_path: Path,
    info: VideoInfo,
    scale: int,
    options: Options,
    notice: Callable[[str], None],
) -> VideoSink | FrameFolderSink:
    if container_format is None:
        return FrameFolderSink(temporary)
    return VideoSink(
        temporary,
        container_format,
        info,
        (info.width * scale, info.height * scale),
        source_path if source_path.is_file() else None,  # where audio and subtitles come from
        options.codec,
        options.crf,
        options.preset,
        options.pix_fmt,
        notice,
    )


def run_jobs(
    jobs: list[tuple[Path, Path]],
    options: Options,
    gpus: int = 1,
    on_progress: Callable[[int, int, int | None], None] = lambda job, done, total: None,
    notice: Callable[[str], None] = lambda message: None,
) -> list[Summary | Exception]:
    """Run every job; with gpus > 1, one worker thread per GPU takes the next file (the network
    releases the GIL while it runs). A failing file is reported and the others go on."""
    if gpus > 1:
        available = torch.cuda.device_count()
        if available < gpus:
            raise ValueError(f"--gpus {gpus}: only {available} CUDA device(s) here")
    devices: queue.Queue = queue.Queue()
    for index in range(max(gpus, 1)):
        devices.put(f"cuda:{index}" if gpus > 1 else options.device)

    def run_one(number: int) -> Summary | Exception:
        source, target = jobs[number]
        device = devices.get()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            job_options = dataclasses.replace(options, device=device)
            on_progress(number, 0, None)
            return upscale(source, target, job_options, lambda d, t: on_progress(number, d, t), notice)
        except (InputError, OutputError, ResumeError, CheckpointError, ValueError) as error:
            return error
        finally:
            devices.put(device)

    if gpus <= 1 or len(jobs) == 1:
        return [run_one(number) for number in range(len(jobs))]
    with ThreadPoolExecutor(max_workers=gpus, thread_name_prefix="vsrpp-gpu") as pool:
        return list(pool.map(run_one, range(len(jobs))))


def plan_jobs(inputs: list[Path], output: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs. One video or frame folder goes to OUTPUT itself; several inputs, or
    a folder of videos, go into OUTPUT as a folder, each under its own name."""
    if len(inputs) == 1 and not is_video_folder(inputs[0]):
        return [(inputs[0], output)]
    if output.suffix:
        raise OutputError(f"{output}: several inputs need an output folder (a path without an extension)")
    sources: list[Path] = []
    for path in inputs:
        sources.extend(sorted(p for p in path.iterdir() if is_video_file(p)) if is_video_folder(path) else [path])
    jobs = []
    for source in sources:
        suffix = source.suffix.lower() if source.suffix.lower() in CONTAINERS else ".mkv"
        jobs.append((source, output / (source.stem + suffix if source.is_file() else source.name)))
    names = [target for _, target in jobs]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise OutputError(f"two inputs would both be written to {duplicate}; rename one of them")
    return jobs


def is_video_folder(path: Path) -> bool:
    """A folder that holds video files rather than frames."""
    if not path.is_dir():
        return False
    entries = [p for p in path.iterdir() if p.is_file()]
    return not any(p.suffix.lower() in FRAME_EXTENSIONS for p in entries) and any(map(is_video_file, entries))


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise OutputError(f"{output} already exists; add --overwrite to replace it")
    if not output.parent.exists():
        raise OutputError(f"{output.parent}: no such folder for the output")
    if output.exists() and output.is_dir() != (container_for(output) is None):
        raise OutputError(f"{output} exists and is {'a folder' if output.is_dir() else 'a file'}; choose another name")


def default_chunk(device: torch.device, width: int, height: int, mid_channels: int) -> int:
    """Frames per window: 32 on CPU; on CUDA, what fits in 60% of the free memory (8 to 100)."""
    if device.type != "cuda":
        return 32
    usable, per_frame = window_memory(device, width, height, mid_channels)
    return int(max(8, min(100, usable // per_frame)))


def default_batch(device: torch.device, width: int, height: int, mid_channels: int, window_frames: int) -> int:
    """Windows per forward: 1 on CPU; on CUDA, as many windows as fit in 60% of the free memory
    (1 to 8: batching independent clips pays 1.4-1.5x on small frames, docs/REFERENCE.md s.7)."""
    if device.type != "cuda":
        return 1
    usable, per_frame = window_memory(device, width, height, mid_channels)
    return int(max(1, min(8, usable // (per_frame * window_frames))))


def window_memory(device: torch.device, width: int, height: int, mid_channels: int) -> tuple[float, int]:
    """Bytes the windows may use (60% of the free GPU memory, less one frame's scratch) and bytes
    per frame of a window."""
    free, _ = torch.cuda.mem_get_info(device)
    pixels = width * height
    per_frame = pixels * (mid_channels * 6 * 2 + 16) + pixels * 16 * 3 * 4  # features, flows, fp32 output
    scratch = pixels * mid_channels * 2 * 60  # one frame's DCN columns and reconstruction at 4x
    return 0.6 * free - scratch, per_frame


def partial_folder(output: Path) -> Path:
    return output.with_name(f".{output.name}.vsrpp-partial")


def temporary_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.vsrpp-tmp")


def finish(temporary: Path, output: Path) -> None:
    if output.is_dir():  # only with --overwrite: a folder cannot be replaced in one step
        shutil.rmtree(output)
    os.replace(temporary, output)


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def path_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir())
    return path.stat().st_size


# ----------------------------------------------------------------------------- threads
_DONE = object()


def in_background(items: Iterable, maxsize: int = QUEUE_FRAMES) -> Iterator:
    """Produce `items` in a thread, `maxsize` ahead at most; its exceptions surface here."""
    channel: queue.Queue = queue.Queue(maxsize)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        channel.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            channel.put(_DONE)
        except BaseException as error:  # handed to the consumer
            channel.put(error)

    thread = threading.Thread(target=produce, daemon=True, name="vsrpp-decode")
    thread.start()
    try:
        while (item := channel.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


class BackgroundWriter:
    """Encodes in a thread; an encoder error is raised at the next put or at close."""

    def __init__(self, sink, maxsize: int = QUEUE_FRAMES) -> None:
        self.sink = sink
        self.channel: queue.Queue = queue.Queue(maxsize)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._consume, daemon=True, name="vsrpp-encode")
        self.thread.start()

    def _consume(self) -> None:
        while (item := self.channel.get()) is not _DONE:
            if self.error is None:
                try:
                    self.sink.write(*item)
                except BaseException as error:
                    self.error = error

    def put(self, rgb, pts) -> None:
        if self.error:
            raise self.error
        self.channel.put((rgb, pts))

    def close(self) -> None:
        self.channel.put(_DONE)
        self.thread.join()
        if self.error:
            raise self.error
        self.sink.close()

    def abort(self) -> None:
        if self.thread.is_alive():
            self.channel.put(_DONE)
            self.thread.join()
        if hasattr(self.sink, "abort"):
            self.sink.abort()


__all__ = ["InputError", "Options", "OutputError", "Summary", "upscale"]
