"""`vsrpp upscale`: decode -> windows -> network -> encode, streamed through bounded queues.

Decoding runs in one thread, encoding in another, the network in the caller's: they overlap,
and no stage holds more than a window (chunk + 2 * overlap frames) plus two short queues, so
memory does not grow with the video. The output is committed in closed segments as it goes
(resume.py), which bounds what an interruption loses and what the disk holds; at the end they
are joined, without re-encoding, into a temporary file beside the output, moved into place.
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .checkpoint import load_model, sha256_of
from .colour import YuvTarget
from .decode import FRAME_EXTENSIONS, Frame, VideoInfo, is_video_file, open_source
from .encode import CONTAINERS, EncoderSettings, Muxer, VideoEncoder, check_encoder_settings, container_for
from .engine import PRECISIONS, Engine, pick_device, pick_dtype
from .errors import OutputError, UsageError, VsrppError, os_error_advice
from .resume import FrameSegment, RunStore, VideoSegment, remove
from .windows import Window, temporal_windows

QUEUE_FRAMES = 8  # decoded frames waiting for the network, and upscaled ones waiting for the encoder
SEGMENT_FRAMES = 240  # output frames per committed segment (whole windows: a segment may hold more)
FRAME_NAME = re.compile(r"\d{8}\.png")  # what a frames-folder output holds (encode.FrameFolderSink)


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
    segment_frames: int = SEGMENT_FRAMES
    strength: float = 1.0  # 0: the source enlarged as the network's skip connection does; 1: the network


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
    workers: list[dict[str, Any]] = field(default_factory=list)  # shared runs: each worker's frames and fps

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "fps": round(self.fps, 3), "seconds": round(self.seconds, 3)}


def upscale(
    source_path: Path,
    output: Path,
    options: Options,
    on_progress: Callable[[float, int | None], None] = lambda done, total: None,
    notice: Callable[[str], None] = lambda message: None,
) -> Summary:
    started = time.perf_counter()
    if output.exists() and source_path.exists() and output.resolve() == source_path.resolve():
        raise OutputError(f"{output} is the input itself; choose another output")
    container_format = container_for(output)
    check_output(output, options.overwrite)
    summary = Summary(str(source_path), str(output))

    def tell(message: str) -> None:
        summary.notices.append(message)
        notice(message)

    source = open_source(source_path, options.deinterlace, tell)
    info = source.info
    total = info.frame_count or info.frame_estimate
    on_progress(0, total)
    device = pick_device(options.device)
    dtype = pick_dtype(options.precision, device)
    summary.device, summary.precision = str(device), next(n for n, v in PRECISIONS.items() if v == dtype)
    summary.colour = options.colour
    model = load_model(options.weights)
    size = (info.width * model.scale, info.height * model.scale)
    settings = EncoderSettings(container_format, options.codec, options.crf, options.preset, options.pix_fmt)
    temporary = temporary_path(output)
    muxer: Muxer | None = None
    store: RunStore | None = None
    writer: SegmentWriter | None = None
    frames: Iterator | None = None
    try:
        # The final file is opened now, so that its encoder, container and audio settings are
        # refused before any work rather than after hours; it is written at the end.
        if container_format is None:
            remove(temporary)  # a folder left by a killed run
            temporary.mkdir()
        else:
            muxer = Muxer(temporary, settings, info, size, source_path if source_path.is_file() else None, tell)
        # Frames for the encoder leave the device as YUV when it takes a format colour.py makes.
        target = muxer_target(settings, info, size) if muxer and options.colour == "device" else None
        store = RunStore.open(
            partial_folder(output),
            fingerprint(source_path, source, options, summary, target),
            plan(options, device, info, model.mid_channels, frames_output=container_format is None),
            options.resume,
            options.overwrite,
        )
        chunk, per_segment = store.plan["chunk_frames"], store.plan["windows_per_segment"]
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
            strength=options.strength,
        )
        summary.chunk_frames, summary.chunk_overlap, summary.batch = chunk, options.chunk_overlap, batch

        writer = SegmentWriter(segment_maker(store, settings, info, size), store)
        closed = store.closed_segments()
        frames = in_background(source.frames(keep_yuv=options.colour == "device"))
        pending: list[Window[Frame]] = []  # windows of one length, waiting to fill a batch

        def closes_segment(window: Window[Frame]) -> bool:
            return window.index % per_segment == per_segment - 1

        def write(window: Window[Frame], upscaled: list) -> None:
            segment = window.index // per_segment
            for frame, image in zip(window.items[window.keep], upscaled, strict=True):
                writer.put(segment, image, frame.pts)
            summary.frames += window.keep.stop - window.keep.start
            on_progress(summary.frames, total)
            if closes_segment(window):
                writer.close_segment(segment, range(segment * per_segment, window.index + 1))

        def run_pending() -> None:
            if not pending:
                return
            runs = [([f.image for f in w.items], w.keep) for w in pending]
            kept = sum(w.keep.stop - w.keep.start for w in pending)

            def within(fraction: float) -> None:  # the bar moves during the window, not after it
                on_progress(summary.frames + fraction * kept, total)

            upscaled_windows = engine.upscale_many(runs, info.bit_depth, target, within)
            for window, upscaled in zip(pending, upscaled_windows, strict=True):
                if not closes_segment(window):  # its segment would close at once: nothing to keep
                    store.save_window(window.index, upscaled)
                write(window, upscaled)
            pending.clear()

        for window in temporal_windows(frames, chunk, options.chunk_overlap):
            if window.index // per_segment in closed:  # committed by an earlier run
                summary.frames += window.keep.stop - window.keep.start
                summary.windows_resumed += 1
                on_progress(summary.frames, total)
                continue
            if store.has_window(window.index):
                run_pending()  # in order: the writer takes windows as they come
                write(window, store.load_window(window.index, target))
                summary.windows_resumed += 1
                continue
            if pending and len(pending[0].items) != len(window.items):
                run_pending()
            pending.append(window)
            if len(pending) >= engine.batch:
                run_pending()
        run_pending()
        writer.close()
        if muxer is not None:
            muxer.mux(store.video_segments())
            muxer.close()
        else:
            join_frame_segments(store.frame_segments(), temporary)
    except OSError as error:
        advice = os_error_advice(error, output.parent, f"{output.name} or its finished segments")
        cleanup(writer, muxer, temporary, store)
        if advice is None:
            raise
        raise advice from None
    except BaseException:
        cleanup(writer, muxer, temporary, store)
        raise
    finally:
        if frames is not None:
            frames.close()  # the decode thread ends and the input is closed, now (not at exit)
    finish(temporary, output)
    store.remove()
    summary.lost = source.report.lost
    summary.fp32_fallbacks = engine.fp32_fallbacks
    summary.tile = engine.tile
    summary.seconds = time.perf_counter() - started
    summary.output_bytes = path_bytes(output)
    return summary


def segment_maker(
    store: RunStore, settings: EncoderSettings, info: VideoInfo, size: tuple[int, int]
) -> Callable[[int], VideoSegment | FrameSegment]:
    """What opens segment i of the output: a fresh encoder for a video, a folder for frames."""

    def new_segment(index: int) -> VideoSegment | FrameSegment:
        if settings.container_format is None:
            return FrameSegment(store, index)
        return VideoSegment(store, index, lambda: VideoEncoder(settings, info, size))

    return new_segment


def cleanup(writer: SegmentWriter | None, muxer: Muxer | None, temporary: Path, store: RunStore | None) -> None:
    """After a failure or an interruption: what is partial goes, closed segments and stored
    windows stay for --resume (and the folder goes too when it holds nothing)."""
    if writer is not None:
        writer.abort()
    if muxer is not None:
        muxer.abort()
    remove(temporary)
    if store is not None:
        store.remove_partials()
        store.remove_if_empty()


def fingerprint(
    source_path: Path, source: Any, options: Options, summary: Summary, target: YuvTarget | None
) -> dict[str, Any]:
    """Everything that changes the output's frames or packets: a resumed run must match it."""
    return {
        "input": str(source_path.resolve()),
        "input_size": source_path.stat().st_size if source_path.is_file() else len(source.files),
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
        "vsrpp": __version__,
    }


def plan(
    options: Options, device: torch.device, info: VideoInfo, mid_channels: int, frames_output: bool = False
) -> dict[str, int]:
    """Window size and segment length. Stored with the run: a resumed run keeps them even where
    free GPU memory (which sizes windows) has changed since. A frames folder has no encoder to
    restart on a keyframe, so there every window is a segment of its own: its PNGs are committed
    as it is done and no window is ever stored losslessly."""
    chunk = options.chunk_frames or default_chunk(device, info.width, info.height, mid_channels)
    per_segment = 1 if frames_output else max(1, math.ceil(options.segment_frames / chunk))
    return {"chunk_frames": chunk, "windows_per_segment": per_segment}


def muxer_target(settings: EncoderSettings, info: VideoInfo, size: tuple[int, int]) -> YuvTarget | None:
    encoder = VideoEncoder(settings, info, size)
    try:
        return encoder.planes_target
    finally:
        encoder.close()


def join_frame_segments(segments: list[Path], folder: Path) -> None:
    """The frames of every segment, numbered on from one segment to the next, into `folder`."""
    count = 0
    for segment in segments:
        for frame in sorted(segment.iterdir()):
            frame.replace(folder / f"{count:08d}{frame.suffix}")
            count += 1


class SegmentWriter:
    """Encodes in a thread, segment by segment; an encoder error is raised at the next put or
    close. Closing a segment waits for it, so the windows it makes redundant can go at once."""

    def __init__(self, new_segment: Callable[[int], Any], store: RunStore, maxsize: int = QUEUE_FRAMES) -> None:
        self.new_segment, self.store = new_segment, store
        self.segment: Any = None
        self.channel: queue.Queue = queue.Queue(maxsize)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._consume, daemon=True, name="vsrpp-encode")
        self.thread.start()

    def _consume(self) -> None:
        while (item := self.channel.get()) is not _DONE:
            work, done = item
            if self.error is None:
                try:
                    work()
                except BaseException as error:
                    self.error = error
            if done is not None:
                done.set()

    def _run(self, work: Callable[[], None], wait: bool = False) -> None:
        if self.error:
            raise self.error
        done = threading.Event() if wait else None
        self.channel.put((work, done))
        if done is not None:
            done.wait()
            if self.error:
                raise self.error

    def put(self, segment: int, image: Any, pts: int | None) -> None:
        def write() -> None:
            if self.segment is None:
                self.segment = self.new_segment(segment)
            self.segment.write(image, pts)

        self._run(write)

    def close_segment(self, segment: int, windows: range) -> None:
        def close() -> None:
            if self.segment is not None:
                self.segment.close()
                self.segment = None
            self.store.drop_windows(windows)

        self._run(close, wait=True)

    def close(self) -> None:
        """Closes the last segment (it may be short) and ends the thread."""

        def close() -> None:
            if self.segment is not None:
                self.segment.close()
                self.segment = None
            self.store.drop_windows(self.store.stored_windows())  # all of them were the last segment's

        self._run(close, wait=True)
        self.channel.put(_DONE)
        self.thread.join()

    def abort(self) -> None:
        if self.thread.is_alive():
            self.channel.put(_DONE)
            self.thread.join()
        if self.segment is not None:
            self.segment.abort()
            self.segment = None


def run_jobs(
    jobs: list[tuple[Path, Path]],
    options: Options,
    gpus: int = 1,
    on_progress: Callable[[int, float, int | None], None] = lambda job, done, total: None,
    notice: Callable[[str], None] = lambda message: None,
) -> list[Summary | Exception]:
    """Run every job; with gpus > 1, one worker thread per GPU takes the next file (the network
    releases the GIL while it runs). A failing file is reported and the others go on."""
    if gpus > 1:
        available = torch.cuda.device_count()
        if available < gpus:
            raise UsageError(f"--gpus {gpus}: only {available} CUDA device(s) here")
    devices: queue.Queue = queue.Queue()
    for index in range(max(gpus, 1)):
        devices.put(f"cuda:{index}" if gpus > 1 else options.device)

    def run_one(number: int) -> Summary | Exception:
        source, target = jobs[number]
        device = devices.get()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            job_options = dataclasses.replace(options, device=device)
            return upscale(source, target, job_options, lambda d, t: on_progress(number, d, t), notice)
        except VsrppError as error:
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
        raise UsageError(f"{output}: several inputs need an output folder (a path without an extension)")
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
        raise UsageError(f"two inputs would both be written to {duplicate}; rename one of them")
    return jobs


def is_video_folder(path: Path) -> bool:
    """A folder that holds video files rather than frames."""
    if not path.is_dir():
        return False
    entries = [p for p in path.iterdir() if p.is_file()]
    return not any(p.suffix.lower() in FRAME_EXTENSIONS for p in entries) and any(map(is_video_file, entries))


def check_output(output: Path, overwrite: bool) -> None:
    """--overwrite replaces only what vsrpp would write there: one video file, or a folder that
    holds nothing but frames in vsrpp's naming. Anything else is refused and left as it is."""
    if not output.parent.is_dir():
        raise OutputError(f"{output.parent}: no such folder for the output")
    if not output.exists() and not output.is_symlink():
        return
    if not overwrite:
        raise OutputError(f"{output} already exists; add --overwrite to replace it")
    wants_folder = container_for(output) is None
    if output.is_symlink() or output.is_dir() != wants_folder:
        kind = "a link" if output.is_symlink() else "a folder" if output.is_dir() else "a file"
        raise OutputError(f"{output} is {kind}, which --overwrite does not replace; choose another output")
    if wants_folder:
        others = sorted(p.name for p in output.iterdir() if not (FRAME_NAME.fullmatch(p.name) and p.is_file()))
        if others:
            more = f" and {len(others) - 1} more" if len(others) > 1 else ""
            raise OutputError(
                f"{output} holds {others[0]}{more}, which vsrpp did not write; --overwrite replaces only a "
                "folder of vsrpp's frames: choose another output folder"
            )


def check_encoder(outputs: list[Path], codec: str | None, crf: int | None, preset: str | None, pix_fmt: str | None):
    """The encoder settings against every container they will go into, before any work starts."""
    formats = {container_for(output) for output in outputs}
    if None in formats and any(value is not None for value in (codec, crf, preset, pix_fmt)):
        raise UsageError("--codec, --crf, --preset and --pix-fmt are for video outputs; a frames folder is PNG")
    for container_format in sorted(formats - {None}):
        check_encoder_settings(EncoderSettings(container_format, codec, crf, preset, pix_fmt))


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
    if output.is_dir():  # only with --overwrite, and only vsrpp's frames (check_output)
        for frame in output.iterdir():
            if FRAME_NAME.fullmatch(frame.name):
                frame.unlink()
        output.rmdir()  # fails, keeping everything, if anything else appeared meanwhile
    os.replace(temporary, output)


def path_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir())
    return path.stat().st_size


# ----------------------------------------------------------------------------- threads
_DONE = object()


def in_background(items: Iterator, maxsize: int = QUEUE_FRAMES) -> Iterator:
    """Produce `items` in a thread, `maxsize` ahead at most; its exceptions surface here. Closing
    this generator (or a failure of its consumer) stops the thread and closes `items` (and so
    the input file) before it returns."""
    channel: queue.Queue = queue.Queue(maxsize)
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        while not stop.is_set():
            try:
                channel.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not hand_over(item):
                    return
            hand_over(_DONE)
        except BaseException as error:  # handed to the consumer
            hand_over(error)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, daemon=True, name="vsrpp-decode")
    thread.start()
    try:
        while (item := channel.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


__all__ = ["Options", "Summary", "upscale"]
