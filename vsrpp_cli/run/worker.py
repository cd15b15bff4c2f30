"""A worker of `vsrpp upscale`: it claims whole segments, decodes each one's frames with their
context, runs its windows through the network, encodes it with a fresh encoder and sends it to
the writer; then the next, until none is left.

One process runs one worker in a thread of its own; `--nproc-per-node`/`--nnodes` run one per
process (one per GPU), started by the elastic launcher. It is the same code either way: only the
store behind coordination.Board differs.

Decoding runs in one thread, encoding in another, the network in the worker's: they overlap,
and no stage holds more than a window (chunk + 2 * overlap frames) plus two short queues, so
memory does not grow with the video (a segment's compressed packets wait in memory to be sent).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import queue
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, UsageError, VsrppError
from ..video.colour import YuvTarget
from ..video.decode import Frame, Source, VideoInfo, open_source
from ..video.encode import EncoderSettings, VideoEncoder
from ..video.shots import marking_cuts
from ..weights.checkpoint import load_model
from ..weights.hashing import sample_sha256, sha256_of
from .coordination import HEARTBEAT, AbortError, Board
from .engine import Engine, pick_device, pick_dtype
from .failpoints import failpoint
from .folder import FrameSegment, Spool, VideoSegment
from .launch import die_with_parent, worker_environment
from .sizing import default_batch
from .windows import Window, WindowTable, temporal_windows

QUEUE_FRAMES = 8  # decoded frames waiting for the network, and upscaled ones waiting for the encoder


@dataclasses.dataclass
class Local:
    """What a worker takes from its own machine's command rather than from the job: files are
    at their paths on this machine, and the device and threads are this machine's."""

    source: str
    weights: str
    spool: str  # the run's folder, used where this machine has it (else a folder of its own)
    device: str  # "auto", "cpu", "cuda", "cuda:N"
    threads: int  # torch threads: this process's share of the machine's cores, or OMP_NUM_THREADS


# ----------------------------------------------------------------------------- entry points
class InProcess:
    """The in-process worker (rank 0 of 1), in a thread. `done` is set when it ends, `error` is
    what it failed with: an Event, since a Thread.join interrupted by a signal can leave the
    thread reported as ended while it runs on (CPython's _wait_for_tstate_lock)."""

    def __init__(self, board: Board, local: Local, notice: Callable[[str], None], moved: Callable[[], None]) -> None:
        self.stop, self.done = threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, args=(board, local, notice, moved), daemon=True,
                                       name="vsrpp-worker")  # fmt: skip
        self.thread.start()

    def _main(self, board: Board, local: Local, notice: Callable[[str], None], moved: Callable[[], None]) -> None:
        try:
            Worker(board, local, 0, 1, 0, stop=self.stop, notice=notice, moved=moved).run()
        except AbortError:
            pass
        except BaseException as error:  # the writer raises it as it was
            self.error = error
        finally:
            self.done.set()


def elastic_main(host: str, port: int, launcher: int, local: Local, secret: str) -> dict[str, Any] | None:
    """A worker process started by the elastic launcher (RANK, LOCAL_RANK, WORLD_SIZE and
    TORCHELASTIC_RESTART_COUNT in its environment)."""
    die_with_parent(launcher)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if local.device != "cpu":
        os.environ.update(worker_environment(int(os.environ["LOCAL_RANK"]), dict(os.environ)))
    os.environ["OMP_NUM_THREADS"] = str(local.threads)  # read by the Engine (threads.use_threads)
    try:
        board = Board.connect(host, port, secret)
    except Exception as error:
        print(f"vsrpp worker {rank}: the writer at {host}:{port} does not answer ({error})", file=sys.stderr)
        sys.exit(1)
    stop_beating = threading.Event()
    beat = threading.Thread(target=keep_beating, args=(board, rank, stop_beating), daemon=True, name="vsrpp-beat")
    beat.start()
    failed = True
    try:
        round_ = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
        board.start_round(rank, round_)
        stats = Worker(board, local, rank, world, round_).run()
        failed = False
    except AbortError:
        pass
    except BaseException as error:
        with contextlib.suppress(Exception):  # the board may be gone with the writer: exit all the same
            board.fail(f"worker {rank}: {describe(error)}")
    finally:
        # The beat thread stops before the process's teardown destroys the store client it uses
        # (a finished worker was once ended by SIGABRT in the teardown, which the agent takes for
        # a failure). The return itself is the agent's: it waits for a worker's return value.
        stop_beating.set()
        beat.join()
    if failed:
        sys.exit(1)
    board.leave(rank)  # after its last beat: the count it leaves at is the last one the writer sees
    return stats  # to this machine's agent (its launcher need not reach the store to know it)


def keep_beating(board: Board, rank: int, stop: threading.Event) -> None:
    """Signs of life from a thread (the network may hold the main one for minutes); the worker
    ends itself when the writer has stopped the run or can no longer be reached."""
    while not stop.is_set():
        try:
            board.beat(rank)
            board.check_abort()
        except BaseException:
            os._exit(1)
        stop.wait(HEARTBEAT)


def describe(error: BaseException) -> str:
    message = str(error) if isinstance(error, VsrppError) else f"{type(error).__name__}: {error}"
    return message.splitlines()[0] if message else type(error).__name__


# ----------------------------------------------------------------------------- the worker
class Worker:
    def __init__(
        self,
        board: Board,
        local: Local,
        rank: int,
        world: int,
        round_: int,
        stop: threading.Event | None = None,
        notice: Callable[[str], None] | None = None,
        moved: Callable[[], None] = lambda: None,
    ) -> None:
        self.board, self.rank, self.world, self.round = board, rank, world, round_
        self.stop = stop or threading.Event()
        self.job = job = board.job()
        self.options = options = job["options"]
        self.notices: list[str] = []
        self.notice, self.moved = notice, moved  # moved: its progress changed (the writer shows it)
        self.segment_frames = 0  # of the open segment, done so far
        self.source = open_source(Path(local.source), options["deinterlace"], self.tell, options["fps"])
        check_same_input(self.source, local, job)
        self.info = self.source.info
        self.device = worker_device(local.device, world)
        dtype = pick_dtype(options["precision"], self.device)
        model = load_model(Path(local.weights), deform_backend=options["deform_backend"])
        self.chunk, self.per_segment = job["plan"]["chunk_frames"], job["plan"]["windows_per_segment"]
        self.overlap = options["chunk_overlap"]
        cuts = job["plan"].get("cuts", [])
        self.table = WindowTable(self.chunk, self.overlap, cuts or [], job["total"])
        # None: a run in one process finds its cuts in the frames it reads anyway (no pass first).
        self.found_cuts: set[int] | None = set() if cuts is None else None
        self.as_read: Iterator[Window[Frame]] | None = None  # the windows, laid out as frames come
        self.held: Window[Frame] | None = None  # read past the segment asked for: the next one's
        window_frames = self.chunk + 2 * self.overlap
        tile = job["plan"].get("tile", options["tile"])  # the writer's choice, the same for every worker
        width, height = (min(side, tile + 2 * options["tile_overlap"]) if tile else side
                         for side in (self.info.width, self.info.height))  # fmt: skip
        batch = options["batch"] or default_batch(self.device, width, height, model.mid_channels, window_frames,
                                                  dtype.itemsize)  # fmt: skip
        self.engine = Engine(model, self.device, dtype, tile, options["tile_overlap"], warn=self.tell,
                             graphs=options["graphs"], batch=batch, compile=options["compile"],
                             strength=options["strength"], deterministic=options["deterministic"])  # fmt: skip
        self.target = YuvTarget(**job["target"]) if job["target"] else None
        size = tuple(job["size"])
        settings = EncoderSettings(job["container_format"], options["codec"], options["crf"], options["preset"],
                                   options["pix_fmt"])  # fmt: skip
        self.new_segment = segment_maker(settings, self.info, size)
        self.own_spool = not Path(local.spool).is_dir()
        self.spool = Spool(spool_folder(job["run_id"], rank) if self.own_spool else Path(local.spool))
        self.reader = FrameReader(self.source, options["colour"] == "device", job["times"], 2 * self.overlap)
        self.stats: dict[str, Any] = {
            "rank": rank, "device": str(self.device), "batch": batch, "segments": 0, "windows": 0,
            "windows_resumed": 0, "frames": 0, "seconds": 0.0, "seconds_sending": 0.0, "bytes_sent": 0,
        }  # fmt: skip

    def tell(self, message: str) -> None:
        """Said at once in one process; a worker process's notices come with its report."""
        if self.notice is not None:
            self.notice(message)
        elif message not in self.notices:
            self.notices.append(message)

    def run(self) -> dict[str, Any]:
        """Every segment this worker claims; what it did (also reported through the store)."""
        began = time.perf_counter()
        try:
            for segment in self.claims():
                if not self.run_segment(segment):
                    break
                self.stats["segments"] += 1
        finally:
            self.reader.close()  # the decode thread ends and the input is closed, now (not at exit)
        if self.own_spool and not self.spool.stored_windows():
            shutil.rmtree(self.spool.folder, ignore_errors=True)
        self.stats.update(
            seconds=round(time.perf_counter() - began, 3),
            seconds_sending=round(self.stats["seconds_sending"], 4),
            peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            fp32_fallbacks=self.engine.fp32_fallbacks,
            tile=self.engine.tile,
            lost=self.source.report.lost,
            cuts=sorted(self.found_cuts) if self.found_cuts is not None else None,
            notices=self.notices,
        )
        self.board.report(self.rank, self.round, self.stats)
        return self.stats

    def claims(self) -> Iterator[int]:
        """Segments not committed, in order, each taken by the first worker to ask for it."""
        job = self.job
        segments = range(job["segments"]) if job["segments"] is not None else itertools.count()
        committed = set(job["committed"])
        for segment in segments:
            if segment in committed or self.board.is_saved(segment):
                continue
            if self.board.claim(self.round, segment, self.rank):
                yield segment

    def run_segment(self, segment: int) -> bool:
        """Encode and send one segment; False when it holds no frame (past the input's end)."""
        first = segment * self.per_segment
        indices = range(first, first + self.per_segment)
        writer = SegmentWriter(self.new_segment)
        try:
            self.segment_frames = 0
            for window, upscaled in self.upscaled_windows(indices):
                for frame, image in zip(window.items[window.keep], upscaled, strict=True):
                    writer.put(image, frame.pts)
                self.segment_frames += window.keep.stop - window.keep.start
                self.board.set_within(self.rank, self.segment_frames)
                self.moved()
            if not self.segment_frames:
                return False
            files = writer.finish()
        finally:
            writer.abort()
        failpoint("encode", self.rank)
        failpoint("commit", self.rank)
        began = time.perf_counter()
        self.board.send(segment, files, self.rank, self.round)
        failpoint("send", self.rank)
        self.board.wait_saved(segment)
        self.stats["seconds_sending"] += time.perf_counter() - began  # until the writer has it on disk
        self.stats["bytes_sent"] += sum(map(len, files.values()))
        self.board.set_within(self.rank, 0)
        self.spool.drop_windows(indices)
        self.stats["frames"] += self.segment_frames
        return True

    def upscaled_windows(self, indices: range) -> Iterator[tuple[Window[Frame], list]]:
        """The segment's windows with their upscaled kept frames, in order: from the spool where
        an earlier run stored them, else through the network, up to `batch` windows at once."""
        pending: list[Window[Frame]] = []

        def run_pending() -> Iterator[tuple[Window[Frame], list]]:
            if not pending:
                return
            runs = [([f.image for f in w.items], w.keep) for w in pending]
            kept = sum(w.keep.stop - w.keep.start for w in pending)

            def within(fraction: float) -> None:  # progress moves during the window; a stop stops it
                if self.stop.is_set():
                    raise AbortError("stopped")
                self.board.set_within(self.rank, self.segment_frames + fraction * kept)
                self.moved()

            upscaled_windows = self.engine.upscale_many(runs, self.info.bit_depth, self.target, within)
            failpoint("network", self.rank)
            for window, upscaled in zip(pending, upscaled_windows, strict=True):
                if window.index != indices[-1]:  # the segment's last window is sent at once: nothing to keep
                    self.spool.save_window(window.index, upscaled)
                self.stats["windows"] += 1
                yield window, upscaled
            pending.clear()

        for window in self.windows(indices):
            if self.stop.is_set():
                raise AbortError("stopped")
            if self.spool.has_window(window.index):
                yield from run_pending()
                self.stats["windows_resumed"] += 1
                yield window, self.spool.load_window(window.index, self.target)
                continue
            if pending and len(pending[0].items) != len(window.items):
                yield from run_pending()
            pending.append(window)
            if len(pending) >= self.engine.batch:
                yield from run_pending()
        yield from run_pending()

    def windows(self, indices: range) -> Iterator[Window[Frame]]:
        """The plan's windows (windows.WindowTable: as a run over the whole video lays them out,
        shot by shot), read lazily, one window at a time; the video may end sooner than known."""
        if self.found_cuts is not None:
            yield from self.windows_as_read(indices)
            return
        for index in indices:
            span = self.table.span(index)
            if span is None:
                return
            items = list(self.reader.read(span.start, span.stop))
            failpoint("decode", self.rank)
            keep_stop = min(span.keep_stop, span.start + len(items))
            if keep_stop <= span.keep_start:
                return
            yield Window(index, span.start, items, slice(span.keep_start - span.start, keep_stop - span.start))


    def windows_as_read(self, indices: range) -> Iterator[Window[Frame]]:
        """The same windows in one process where the cuts are not planned: found in the frames
        as they are read, from the first on (a resumed run reads past what it has, as it would
        anyway, and finds the same cuts), 3 frames ahead of the windows (shots.LOOKAHEAD)."""
        if self.as_read is None:
            found = self.found_cuts
            frames = marking_cuts(self.reader.read(0, sys.maxsize), lambda frame: frame.image, found)
            self.as_read = temporal_windows(frames, self.chunk, self.overlap, found.__contains__)
        while True:
            window, self.held = self.held or next(self.as_read, None), None
            if window is None or window.index >= indices.stop:
                self.held = window
                return
            if window.index >= indices.start:
                failpoint("decode", self.rank)
                yield window


def worker_device(name: str, world: int) -> torch.device:
    """The worker's device, made current for the whole process: Triton launches and CUDA graph
    captures use the current device. A worker of several sees one GPU only (launch.py)."""
    if world > 1 and name != "cpu":
        name = "cuda:0" if torch.cuda.is_available() else "cpu"
    device = pick_device(name)
    if device.type == "cuda":
        device = torch.device("cuda", device.index or 0)
        torch.cuda.set_device(device)
    return device


def check_same_input(source: Source, local: Local, job: dict[str, Any]) -> None:
    """Every machine must read the same input and weights as the writer's."""
    fingerprint = job["fingerprint"]
    size = source.path.stat().st_size if source.path.is_file() else len(source.files)
    if size != fingerprint["input_size"]:
        raise InputError(
            f"{source.path} here is not the input of the run ({size} bytes against {fingerprint['input_size']} on "
            "the first machine); give every machine the same file"
        )
    if sample_sha256(source.path, source.files or None) != fingerprint["input_sample"]:
        raise InputError(
            f"{source.path} here is not the input of the run (the same size as the first machine's, other bytes); "
            "give every machine the same file"
        )
    if sha256_of(Path(local.weights)) != fingerprint["weights_sha256"]:
        raise UsageError(f"{local.weights} here differs from the first machine's weights; give every machine the same")


def spool_folder(run_id: str, rank: int) -> Path:
    """Where a worker on a machine without the run's folder keeps its lossless windows (kept for
    --resume): a folder of its own, which it removes when it ends with nothing in it."""
    folder = Path(tempfile.gettempdir()) / f"vsrpp-spool-{run_id}-{rank}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def segment_maker(
    settings: EncoderSettings, info: VideoInfo, size: tuple[int, int]
) -> Callable[[], VideoSegment | FrameSegment]:
    """What opens a segment of the output: a fresh encoder for a video, PNG files for frames."""

    def new_segment() -> VideoSegment | FrameSegment:
        if settings.container_format is None:
            return FrameSegment()
        return VideoSegment(lambda: VideoEncoder(settings, info, size))

    return new_segment


# ----------------------------------------------------------------------------- reading
class FrameReader:
    """Frames [start, stop) of the input, for windows asked in order or not. A read goes on from
    where the last ended (the `behind` frames before it are kept for the next window's context);
    anything else seeks by the exact table of frame times, or, without one (a single process),
    reads on (from the start if need be). The first frame after a seek must be the one asked for."""

    def __init__(self, source: Source, keep_yuv: bool, times: list[int] | None, behind: int) -> None:
        self.source, self.keep_yuv, self.times = source, keep_yuv, times
        self.recent: deque[Frame] = deque(maxlen=max(1, behind))
        self.frames: Iterator[Frame] | None = None
        self.ahead: Frame | None = None  # read from the decoder, not yet asked for
        self.position = 0  # the index of the next frame from the decoder

    def read(self, start: int, stop: int) -> Iterator[Frame]:
        held = [f for f in self.recent if f.index >= start]
        reads_on = (held and held[0].index == start) or start == self.position
        if self.frames is not None and (reads_on or (start > self.position and self.times is None)):
            yield from (f for f in held if f.index < stop)
        else:
            self._seek(start if self.times is not None else 0)
        while (frame := self._next()) is not None:
            if frame.index >= stop:
                self.ahead, self.position = frame, frame.index
                return
            self.recent.append(frame)
            if frame.index >= start:
                yield frame
            if frame.index == stop - 1:
                return

    def _next(self) -> Frame | None:
        frame, self.ahead = self.ahead, None
        if frame is None and self.frames is not None:
            frame = next(self.frames, None)
        if frame is not None:
            self.position = frame.index + 1
        return frame

    def _seek(self, start: int) -> None:
        self.close()
        self.recent.clear()
        self.frames = in_background(self.source.frames(self.keep_yuv, first=start, times=self.times))
        self.ahead, self.position = next(self.frames, None), start
        first = self.ahead
        if first is not None and (first.index != start or (self.times and first.pts != self.times[start])):
            raise InputError(
                f"{self.source.path}: seeking to frame {start} gave frame {first.index} (pts {first.pts}) instead; "
                "its packets' timestamps do not match its frames: run it with one process (--nproc-per-node 1)"
            )

    def close(self) -> None:
        if self.frames is not None:
            self.frames.close()  # type: ignore[attr-defined]
            self.frames = None


# ----------------------------------------------------------------------------- threads
class SegmentWriter:
    """Encodes one segment in a thread; an encoder error is raised at the next put or finish."""

    def __init__(self, new_segment: Callable[[], Any], maxsize: int = QUEUE_FRAMES) -> None:
        self.new_segment = new_segment
        self.segment: Any = None
        self.channel: queue.Queue = queue.Queue(maxsize)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._consume, daemon=True, name="vsrpp-encode")
        self.thread.start()

    def _consume(self) -> None:
        while (item := self.channel.get()) is not _DONE:
            if self.error is None:
                try:
                    if self.segment is None:
                        self.segment = self.new_segment()
                    self.segment.write(*item)
                except BaseException as error:
                    self.error = error

    def put(self, image: Any, pts: int | None) -> None:
        if self.error:
            raise self.error
        self.channel.put((image, pts))

    def finish(self) -> dict[str, bytes]:
        """The segment's files, once every frame is encoded."""
        self.channel.put(_DONE)
        self.thread.join()
        if self.error:
            raise self.error
        files, self.segment = self.segment.close(), None
        return files

    def abort(self) -> None:
        if self.thread.is_alive():
            self.channel.put(_DONE)
            self.thread.join()
        if self.segment is not None:
            with contextlib.suppress(Exception):  # after another failure: that one is reported
                self.segment.abort()
            self.segment = None


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


__all__ = ["InProcess", "Local", "Worker", "elastic_main"]
