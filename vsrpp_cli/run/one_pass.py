"""One pass from input to output, for what can be read or written only once: `-` as INPUT
(standard input) or as OUTPUT (standard output), a FIFO, a device.

Frames go through the same engine as every run (windows with context, tiles, precision, the
fp32 fallback) and one encoder for the whole output, and are muxed as they come out, with the
input's audio and subtitles interleaved by time; nothing is stored on the way, so such a run can
be neither resumed nor shared among workers, and both are refused before any work.

Latency: output frame i leaves once input frame i + chunk_frames + chunk_overlap - 1 has been
read (the end of its window's context), plus shots.LOOKAHEAD (3) where cuts are found as frames
arrive (--scene-cuts auto), plus the encoder's own delay (none for rawvideo and yuv4mpegpipe;
x264's lookahead otherwise). `Summary.latency_frames` is the largest lag measured.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..errors import Interrupted, OutputError, UsageError, os_error_advice
from ..video.encode import VideoEncoder
from ..video.images import FrameFolderSink
from ..video.inputs import is_live
from ..video.live import LiveSource
from ..video.mux import Muxer
from . import failpoints
from .engine import build_engine
from .folder import clean_up, output_lock, remove
from .launch import Launch
from .options import Options, Summary
from .outputs import finish, temporary_path
from .plan import Run
from .reading import in_background
from .windows import batches, windows_as_read

STDIO = "-"


def check_one_pass(source: Path, output: Path, options: Options, launch: Launch) -> None:
    """What a one-pass run cannot do, refused before anything is read."""
    if is_live(source):
        what = "standard input" if str(source) == STDIO else str(source)
        if options.resume:
            raise UsageError(f"--resume: {what} is read once, front to back, so its run cannot be resumed; "
                             "save it to a file first to be able to resume")  # fmt: skip
        if launch.processes > 1:
            raise UsageError(f"--nproc-per-node/--nnodes: {what} is read once, front to back, so it cannot be "
                             "shared among workers; run it in one process, or save it to a file first")  # fmt: skip
    if str(source) == STDIO and os.isatty(0):
        raise UsageError("- reads a video from standard input, but that is a terminal here; pipe a stream in, "
                         "e.g. ffmpeg -i in.mov -f matroska - | vsrpp upscale - out.mkv")  # fmt: skip
    if str(output) == STDIO:
        if os.isatty(1):
            raise UsageError("- writes the video to standard output, but that is a terminal here; pipe it into "
                             "a program (vsrpp upscale in.mp4 - | mpv -) or give a file")  # fmt: skip
        if options.resume:
            raise UsageError("--resume: a run that writes to standard output cannot be resumed; write to a file "
                             "to be able to resume")  # fmt: skip
        if launch.processes > 1:
            raise UsageError("--nproc-per-node/--nnodes: workers' segments are joined at the end, but standard "
                             "output is written as the run goes; write to a file, or run in one process")  # fmt: skip


def run_one_pass(run: Run, on_progress: Callable[[float, int | None], None]) -> Summary:
    """Frames read, windowed shot by shot, upscaled and written as they come: the run's one
    open-ended segment, straight into the output."""
    options, info, summary = run.options, run.info, run.summary
    # One window at a time unless asked: each window more in a batch is a chunk more of latency.
    engine = build_engine(options, options.weights, info, run.device, run.tile, run.chunk + 2 * options.chunk_overlap,
                          run.tell, batch=options.batch or 1, model=run.model)  # fmt: skip
    summary.chunk_frames, summary.batch = run.chunk, engine.batch
    with contextlib.ExitStack() as stack:
        stack.callback(run.source.close)
        sink = stack.enter_context(open_sink(run))
        decoded = in_background(run.source.frames(options.colour == "device"))
        stack.callback(decoded.close)  # the decode thread stopped (before the input is closed), on any exit
        taken = Counted(decoded)
        windows, cuts = windows_as_read(taken, run.chunk, options.chunk_overlap, options.scene_cuts, info.frame_rate)
        done = 0  # frames handed to the output
        for batch in batches(windows, engine.batch):

            def within(frames: float, done: int = done) -> None:
                on_progress(done + frames, run.total)

            for window, images in zip(batch, engine.upscale_windows(batch, info.bit_depth, sink.target, within),
                                      strict=True):  # fmt: skip
                for frame, image in zip(window.items[window.keep], images, strict=True):
                    sink.write(image, frame.pts, taken.count)
                    done += 1
                failpoints.failpoint("network")
                on_progress(done, run.total)
        sink.finish(taken.count)
    summary.frames, summary.latency_frames, summary.cuts = done, sink.latency, sorted(cuts)
    summary.fp32_fallbacks, summary.tile = engine.fp32_fallbacks, engine.tile
    summary.lost = list(run.source.report.lost)
    return summary


class Counted:
    """An iterable that counts the items taken from it (the frames the windows have read)."""

    def __init__(self, items: Iterable) -> None:
        self.items, self.count = items, 0

    def __iter__(self) -> Iterator:
        for item in self.items:
            self.count += 1
            yield item


class Sink:
    """Where upscaled frames go in a one-pass run: one encoder and the muxer (a file or a pipe),
    or PNG frames; the lag between frames read and frames out is measured as they go."""

    def __init__(self, muxer: Muxer | None, encoder: VideoEncoder | None, frames: FrameFolderSink | None,
                 use_planes: bool) -> None:  # fmt: skip
        self.muxer, self.encoder, self.frames = muxer, encoder, frames
        self.target = encoder.planes_target if encoder is not None and use_planes else None
        self.out = 0  # frames in the output so far (packets muxed, or PNGs written)
        self.latency = 0

    def write(self, image, pts: int | None, read: int) -> None:
        """One upscaled frame, `read` input frames having been taken so far."""
        if self.frames is not None:
            self.frames.write(image, pts)
            self._out(1, read)
        else:
            self._mux(self.encoder.encode(image, pts), read)

    def finish(self, read: int, stopped: bool = False) -> None:
        """The encoder's held frames out and the output ended; `stopped` (a live source ended
        early): the audio and subtitles end with the video rather than run on after it."""
        if self.encoder is not None:
            self._mux(self.encoder.flush(), read)
            self.muxer.close(until=self.muxer.video_end if stopped else None)

    def _mux(self, packets: list, read: int) -> None:
        self.muxer.write(packets)
        self._out(len(packets), read)

    def _out(self, frames: int, read: int) -> None:
        """Output frame i (i = self.out) left with `read` input frames read: a lag of read - i."""
        if frames:
            self.latency = max(self.latency, read - self.out)
        self.out += frames


@contextlib.contextmanager
def open_sink(run: Run) -> Iterator[Sink]:
    """The output, open for the run: standard output, or a temporary beside OUTPUT moved into
    place once complete. On a failure what was begun is removed (nothing is kept: there is no
    resume), and a closed pipe downstream is said in one line. Ctrl-C (SIGTERM, KeyboardInterrupt)
    is how a live source is stopped: the output is ended with the frames out so far, a whole
    file, as FFmpeg ends a recording."""
    output, options, tell = run.output, run.options, run.tell
    to_stdout = str(output) == STDIO
    temporary = None if to_stdout else temporary_path(output)
    muxer: Muxer | None = None
    encoder: VideoEncoder | None = None
    sink: Sink | None = None
    with (
        contextlib.nullcontext() if to_stdout else output_lock(output),
        stdout_for_video() if to_stdout else contextlib.nullcontext(None) as descriptor,
    ):
        try:
            if run.container_format is None:
                remove(temporary)  # a folder left by a killed run
                sink = Sink(None, None, FrameFolderSink(temporary), False)
            else:
                url = f"pipe:{descriptor}" if to_stdout else temporary
                # Audio and subtitles: a live source's as it reads them, or a file's own.
                source = run.source
                audio = source if isinstance(source, LiveSource) else source.path if source.path.is_file() else None
                muxer = Muxer(url, run.settings, run.info, run.size, audio, tell)
                encoder = VideoEncoder(run.settings, run.info, run.size)
                sink = Sink(muxer, encoder, None, options.colour == "device")
            yield sink
            if temporary is not None:
                finish(temporary, output)
        except OSError as error:
            clean_up(muxer, temporary, None, tell)
            if error.errno == errno.EPIPE:
                raise OutputError("the program reading vsrpp's output closed the pipe, so the run stopped") from None
            advice = os_error_advice(error, output.parent, output.name, kept=False)
            if advice is None:
                raise
            raise advice from None
        except (Interrupted, KeyboardInterrupt):
            if not end_early(sink, temporary, output, tell):
                clean_up(muxer, temporary, None, tell)
            raise
        except BaseException:
            clean_up(muxer, temporary, None, tell)
            raise
        finally:
            if encoder is not None:
                encoder.close()


def end_early(sink: Sink | None, temporary: Path | None, output: Path, tell: Callable[[str], None]) -> bool:
    """After an interruption: the output ended with the frames out so far (the encoder's held
    ones flushed, the container closed, the file moved into place). False where nothing came out
    yet, or ending failed (then the caller removes what was begun)."""
    if sink is None:
        return False
    try:
        sink.finish(sink.out, stopped=True)  # frames the encoder still held come out here
        if not sink.out:
            return False
        if temporary is not None:
            finish(temporary, output)
    except Exception:  # the interruption is what is reported
        return False
    tell(f"stopped: {output if temporary is not None else 'the stream'} ends after {sink.out} frames")
    return True


@contextlib.contextmanager
def stdout_for_video() -> Iterator[int]:
    """A descriptor of standard output for the video alone: while it is written, descriptor 1
    points at standard error, so that nothing else printed can land in the stream."""
    import sys

    sys.stdout.flush()
    video = os.dup(1)
    os.dup2(2, 1)
    try:
        yield video
    finally:
        sys.stdout.flush()
        os.dup2(video, 1)
        os.close(video)
