"""Pipes and live sources (run/one_pass.py): `-` as INPUT and OUTPUT through real processes, FIFOs,
what a one-pass run refuses, a closed pipe downstream, and the latency it measures."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from harness import run_vsrpp
from media import encode_video, moving_scene, read_frames, with_subtitles
from pipe_ends import payload

import vsrpp_cli
from vsrpp_cli.errors import UsageError
from vsrpp_cli.video.shots import LOOKAHEAD

PIPES = Path(__file__).with_name("pipe_ends.py")
CHUNK, OVERLAP = 4, 2
WINDOWS = ["--chunk-frames", str(CHUNK), "--chunk-overlap", str(OVERLAP)]


@pytest.fixture(scope="module")
def weights(official_checkpoint):
    return official_checkpoint(8, 1, True, seed=7)[0]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """10 frames (3 windows) with stereo AAC and two subtitle cues, in Matroska."""
    folder = tmp_path_factory.mktemp("pipes")
    video = encode_video(folder / "video.mkv", moving_scene(10, 32, 48), audio_channels=2)
    return with_subtitles(video, [(0, 120, "Hello"), (200, 320, "World")], folder / "source.mkv")


@pytest.fixture(scope="module")
def file_run(tmp_path_factory, weights, source) -> Path:
    """The same clip upscaled file to file (segments, joined): what a pipe must give."""
    out = tmp_path_factory.mktemp("file") / "out.mkv"
    vsrpp_cli.upscale(source, out, weights=weights, device="cpu", codec="ffv1", chunk_frames=CHUNK,
                      chunk_overlap=OVERLAP)  # fmt: skip
    return out


def packets_of(path: Path) -> dict:
    """The non-video packets of a file as pipes.py's consumer reports them, and its frame times."""
    facts = {"video_times": [], "packets": []}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if not packet.size:
                continue
            if packet.stream.type == "video":
                facts["video_times"].append(round(float(packet.pts * packet.time_base), 6))
            else:
                digest = hashlib.sha256(payload(packet)).hexdigest()
                facts["packets"].append([packet.stream.type, round(float(packet.pts * packet.time_base), 6), digest])
    facts["video_times"].sort()
    return facts


def test_pipe_in_and_pipe_out_keep_frames_times_audio_and_subtitles(tmp_path, weights, source, file_run):
    """PyAV writes Matroska into a pipe, `vsrpp upscale - -` reads it and writes Matroska to its
    standard output, PyAV reads that: the frames equal the file-to-file run's bit for bit, and
    every frame time, audio and subtitle packet is the input's."""
    report = tmp_path / "report"
    producer = subprocess.Popen([sys.executable, PIPES, "produce", source, "matroska"], stdout=subprocess.PIPE)
    vsrpp = subprocess.Popen(
        [sys.executable, "-m", "vsrpp_cli", "upscale", "-", "-", "--weights", weights, "--device", "cpu",
         "--codec", "ffv1", *WINDOWS, "--json"],
        stdin=producer.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    consumer = subprocess.Popen([sys.executable, PIPES, "consume", report], stdin=vsrpp.stdout)
    producer.stdout.close()
    vsrpp.stdout.close()
    errors = vsrpp.stderr.read().decode()
    assert [consumer.wait(), vsrpp.wait(), producer.wait()] == [0, 0, 0], errors
    summary = json.loads(errors[errors.index("{") : errors.rindex("}") + 1])  # --json goes to stderr here
    assert summary["frames"] == 10 and summary["output"] == "-"
    assert summary["latency_frames"] == CHUNK + OVERLAP + LOOKAHEAD  # FFV1 adds no delay of its own
    assert np.array_equal(np.load(str(report) + ".npy"), read_frames(file_run))
    received = json.loads(Path(str(report) + ".json").read_text())
    expected = packets_of(source)
    assert received["streams"] == ["video", "audio", "subtitle"]
    assert received["video_times"] == expected["video_times"]
    assert sorted(received["packets"]) == sorted(expected["packets"])
    assert [p for p in received["packets"] if p[0] == "subtitle"] == [
        p for p in expected["packets"] if p[0] == "subtitle"
    ]
    assert sorted(os.listdir(tmp_path)) == ["report.json", "report.npy"]  # nothing else written


def test_a_closed_pipe_downstream_stops_the_run_with_one_line(tmp_path, monkeypatch, weights):
    """The reader (another process) exits after 2000 bytes: vsrpp stops with one line and exit 1,
    and leaves nothing behind."""
    monkeypatch.chdir(tmp_path)
    clip = encode_video(tmp_path / "in.mkv", moving_scene(40, 32, 48), audio_channels=2)
    with stdout_into(PIPES, "close-after", 2000) as reader:
        result = run_vsrpp("upscale", clip, "-", "--weights", weights, "--device", "cpu", "--codec", "ffv1", *WINDOWS)
    assert (reader.wait(), result.returncode) == (0, 1)
    assert result.stderr.strip().splitlines() == [
        "error: the program reading vsrpp's output closed the pipe, so the run stopped"
    ]
    assert sorted(os.listdir(tmp_path)) == ["in.mkv"]


def feed_fifo(fifo: Path, data: bytes) -> threading.Thread:
    def write() -> None:
        with contextlib.suppress(BrokenPipeError), open(fifo, "wb") as pipe:  # a reader that stops early
            pipe.write(data)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_a_fifo_is_read_once_to_the_same_output_with_its_latency_measured(tmp_path, weights, source, file_run):
    """A FIFO (a live source) into a file: the frames of the file-to-file run, the audio and
    subtitles kept, output frame i out once frame i + chunk + overlap - 1 + 3 was read (cuts are
    found 3 frames late)."""
    fifo = tmp_path / "live.mkv"
    os.mkfifo(fifo)
    writer = feed_fifo(fifo, source.read_bytes())
    out = tmp_path / "out.mkv"
    summary = vsrpp_cli.upscale(fifo, out, weights=weights, device="cpu", codec="ffv1", chunk_frames=CHUNK,
                                chunk_overlap=OVERLAP)  # fmt: skip
    writer.join()
    assert summary.frames == 10 and summary.latency_frames == CHUNK + OVERLAP + LOOKAHEAD
    assert np.array_equal(read_frames(out), read_frames(file_run))
    assert packets_of(out) == packets_of(file_run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.mkv", "out.mkv"]


@contextlib.contextmanager
def stdout_into(*command: object) -> Iterator[subprocess.Popen]:
    """This process's standard output (descriptor 1) into the standard input of `command` (a
    real pipe to a real process) for the block; the pipe is closed after it (the reader's EOF)."""
    read, write = os.pipe()
    reader = subprocess.Popen([sys.executable, *map(str, command)], stdin=read)
    os.close(read)
    saved = os.dup(1)
    os.dup2(write, 1)
    os.close(write)
    try:
        yield reader
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@pytest.mark.parametrize("fmt", ["nut", "mpegts", "yuv4mpegpipe"])
def test_every_stream_format_carries_the_frames_and_what_it_can_hold(tmp_path, weights, source, file_run, fmt):
    """--format writes standard output as NUT, MPEG-TS or yuv4mpegpipe (read by PyAV in another
    process): the same frames (lossless encoders; y4m holds raw frames), the audio wherever the
    format holds it, every frame's time."""
    report = tmp_path / "report"
    codec = {"nut": ["--codec", "ffv1"], "mpegts": ["--codec", "libx264", "--crf", "0"], "yuv4mpegpipe": []}[fmt]
    with stdout_into(PIPES, "consume", report) as consumer:
        result = run_vsrpp("upscale", source, "-", "--format", fmt, "--weights", weights, "--device", "cpu", *codec,
                           *WINDOWS, "-q")  # fmt: skip
    assert (consumer.wait(), result.returncode) == (0, 0), result.stderr
    received = json.loads(Path(str(report) + ".json").read_text())
    frames = np.load(str(report) + ".npy")
    assert frames.shape == (10, 128, 192, 3)
    expected = packets_of(source)
    if fmt == "yuv4mpegpipe":
        assert received["streams"] == ["video"]
        assert np.array_equal(frames, read_frames(file_run))
    else:
        assert received["streams"][:2] == ["video", "audio"]
        audio = sorted(p[2] for p in expected["packets"] if p[0] == "audio")
        assert sorted(p[2] for p in received["packets"] if p[0] == "audio") == audio  # the same packets
        if fmt == "nut":
            assert np.array_equal(frames, read_frames(file_run))
    offset = received["video_times"][0] - expected["video_times"][0]  # MPEG-TS starts its clock at 1.4 s
    assert [round(t - offset, 3) for t in received["video_times"]] == [round(t, 3) for t in expected["video_times"]]


@pytest.mark.parametrize(
    ("paths", "options", "says"),
    [
        (["-", "out.mkv"], ["--resume"], "--resume: standard input is read once"),
        (
            ["-", "out.mkv"],
            ["--nproc-per-node", "2"],
            "standard input is read once, front to back, so it cannot be shared",
        ),
        (["in.mkv", "-"], ["--resume"], "--resume: a run that writes to standard output cannot be resumed"),
        (["in.mkv", "-"], ["--gpus", "2"], "standard output is written as the run goes"),
        (["-", "in.mkv", "out"], [], "- (standard input) is one stream"),
        (["in.mkv", "out.mkv"], ["--format", "nut"], "--format nut is for `-` (standard output)"),
        (
            ["in.mkv", "-"],
            ["--format", "avi"],
            "--format avi: standard output takes matroska, nut, mpegts, yuv4mpegpipe",
        ),
        (["in.mkv", "-"], ["--format", "yuv4mpegpipe", "--codec", "libx264"], "it holds raw frames only"),
    ],
)
def test_what_a_one_pass_run_cannot_do_is_refused_in_one_line(tmp_path, monkeypatch, weights, paths, options, says):
    monkeypatch.chdir(tmp_path)
    encode_video(tmp_path / "in.mkv", moving_scene(2, 16, 16))
    result = run_vsrpp("upscale", *paths, "--weights", weights, "--device", "cpu", *options)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and says in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["in.mkv"]


def test_the_api_refuses_to_resume_a_fifo_before_reading_it(tmp_path, weights):
    fifo = tmp_path / "live.mkv"
    os.mkfifo(fifo)  # nobody writes to it: reading it would block
    with pytest.raises(UsageError, match="cannot be resumed"):
        vsrpp_cli.upscale(fifo, tmp_path / "out.mkv", weights=weights, resume=True)


@pytest.mark.parametrize("end", ["input", "output"])
def test_a_terminal_is_refused_as_the_pipe(tmp_path, weights, end):
    """`-` where standard input or output is a terminal: a video cannot come from or go to it."""
    clip = encode_video(tmp_path / "in.mkv", moving_scene(2, 16, 16))
    master, terminal = os.openpty()
    descriptor = 0 if end == "input" else 1
    saved = os.dup(descriptor)
    os.dup2(terminal, descriptor)
    try:
        paths = ["-", tmp_path / "out.mkv"] if end == "input" else [clip, "-"]
        result = run_vsrpp("upscale", *paths, "--weights", weights)
    finally:
        os.dup2(saved, descriptor)
        for fd in (saved, terminal, master):
            os.close(fd)
    assert result.returncode == 2 and "that is a terminal here" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["in.mkv"]


def test_a_one_pass_run_that_fails_leaves_nothing_and_runs_again(tmp_path, monkeypatch, weights, source, file_run):
    """A failure in the middle (the failpoint after the second window) removes what was begun; a
    crash (SIGKILL: nothing can clean) leaves its temporary, which the next run replaces. A
    one-pass run has no resume: the same command again gives the whole output."""
    fifo, out = tmp_path / "live.mkv", tmp_path / "out.mkv"
    os.mkfifo(fifo)
    options = {"weights": weights, "device": "cpu", "codec": "ffv1", "chunk_frames": CHUNK, "chunk_overlap": OVERLAP}
    monkeypatch.setenv("VSRPP_FAILPOINTS", "network@2=raise")
    writer = feed_fifo(fifo, source.read_bytes())
    with pytest.raises(Exception, match="failpoint network"):
        vsrpp_cli.upscale(fifo, out, **options)
    writer.join()  # the pipe closed under it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.mkv"]

    monkeypatch.setenv("VSRPP_FAILPOINTS", "network@2=crash")
    with open(source, "rb") as stdin:  # `-`: a one-pass run, as from a pipe
        crashed = subprocess.run(
            [sys.executable, "-m", "vsrpp_cli", "upscale", "-", out, "--weights", weights, "--device", "cpu",
             "--codec", "ffv1", *WINDOWS, "-q"], stdin=stdin, capture_output=True,
        )  # fmt: skip
    assert crashed.returncode == -9 and not out.exists()
    assert (tmp_path / ".out.mkv.vsrpp-tmp").exists()  # what a killed process leaves

    monkeypatch.delenv("VSRPP_FAILPOINTS")
    writer = feed_fifo(fifo, source.read_bytes())
    vsrpp_cli.upscale(fifo, out, **options)
    writer.join()
    assert np.array_equal(read_frames(out), read_frames(file_run))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.mkv", "out.mkv"]


def test_stopping_a_live_run_ends_the_output_with_the_frames_out_so_far(tmp_path, weights, source, file_run):
    """Ctrl-C is how a live source is stopped: the output is a whole file with the frames out so
    far (here the interruption comes after the second window), as FFmpeg ends a recording."""
    fifo, out = tmp_path / "live.mkv", tmp_path / "out.mkv"
    os.mkfifo(fifo)
    writer = feed_fifo(fifo, source.read_bytes())

    def stop_after_two_windows(done: float, total: int | None) -> None:
        if done == 2 * CHUNK and isinstance(done, int):  # written (fractions are heard within a window)
            raise KeyboardInterrupt

    notices: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        vsrpp_cli.upscale(fifo, out, weights=weights, device="cpu", codec="ffv1", chunk_frames=CHUNK,
                          chunk_overlap=OVERLAP, on_progress=stop_after_two_windows, notice=notices.append)  # fmt: skip
    writer.join()
    assert np.array_equal(read_frames(out), read_frames(file_run)[: 2 * CHUNK])
    assert notices[-1] == f"stopped: {out} ends after {2 * CHUNK} frames"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.mkv", "out.mkv"]
    ends = stream_ends(out)  # the audio ends with the video (to an AAC frame), not where reading stopped
    assert ends["video"] == 2 * CHUNK / 25 and abs(ends["audio"] - ends["video"]) <= 1024 / 48000 + 0.002  # (ms)


def stream_ends(path: Path) -> dict[str, float]:
    """Where each kind of stream ends, in seconds: its last packet's time plus duration."""
    ends: dict[str, float] = {}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.pts is not None and packet.size:
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                ends[packet.stream.type] = max(ends.get(packet.stream.type, 0.0), end)
    return ends
