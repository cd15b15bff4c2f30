"""Nothing lost, nothing unclear: what a user's folder, a full disk, a signal or a wrong value does
to a run. Real clips, real files, real processes where the process is what is tested."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from harness import NO_NETWORK, options_without_network, run_vsrpp
from media import encode_video, moving_scene, probe, read_frames

from vsrpp_cli.errors import VsrppError
from vsrpp_cli.run.pipeline import Options, upscale


@pytest.fixture(scope="module")
def weights(official_checkpoint) -> Path:
    return official_checkpoint(8, 1, True, seed=3)[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """18 frames with stereo audio: 3 segments of 2 windows of 3 frames with the options below."""
    folder = tmp_path_factory.mktemp("clip")
    return encode_video(folder / "clip.mp4", moving_scene(FRAMES, 32, 48), audio_channels=2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, weights, clip) -> Path:
    """The clip upscaled in one uninterrupted run: what every interrupted and resumed run must give."""
    path = tmp_path_factory.mktemp("reference") / "full.mp4"
    assert run_vsrpp("upscale", clip, path, "--weights", weights, *SEGMENTED).returncode == 0
    return path


FRAMES, SEGMENTS, WINDOWS = 18, 3, 6
SEGMENTED = ["--chunk-frames", "3", "--chunk-overlap", "1", "--segment-frames", "6", "-q"]

def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# ----------------------------------------------------------------------------- the user's files
def test_overwrite_replaces_only_what_vsrpp_wrote(tmp_path, weights):
    source = encode_video(tmp_path / "in.mp4", moving_scene(3, 48, 64))
    folder = tmp_path / "myfolder"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "sub" / "keep.txt").write_text("mine too")
    (folder / "00000000.png").write_bytes(b"an old frame")
    mine = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    w = ["--weights", weights, "-q", *NO_NETWORK]

    refused = run_vsrpp("upscale", source, folder, *w, "--overwrite")
    assert refused.returncode == 1 and "which vsrpp did not write" in one_line(refused)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == mine
    assert (folder / "notes.txt").read_text() == "mine"

    into = run_vsrpp("upscale", source, source, folder, *w, "--overwrite")  # a folder to write into
    assert into.returncode == 2 and "two inputs would both be written" in into.stderr
    other = encode_video(tmp_path / "other.mkv", moving_scene(2, 48, 64, seed=1))
    into = run_vsrpp("upscale", source, other, folder, *w, "--overwrite")
    assert into.returncode == 0, into.stderr
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "sub" / "keep.txt").exists()
    assert (folder / "in.mp4").is_file() and (folder / "other.mkv").is_file()

    notes = tmp_path / "notes.mp4"  # a file that is no video, whatever its name
    notes.write_text("my notes")
    refused = run_vsrpp("upscale", source, notes, *w, "--overwrite")
    assert refused.returncode == 1 and "is not a video" in one_line(refused)
    assert notes.read_text() == "my notes"

    frames = tmp_path / "frames"  # a folder holding nothing but vsrpp's frames is replaced
    assert run_vsrpp("upscale", source, frames, *w).returncode == 0
    (frames / "00000007.png").write_bytes(b"a frame of an older, longer run")
    again = run_vsrpp("upscale", source, frames, *w, "--overwrite")
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in frames.iterdir()) == ["00000000.png", "00000001.png", "00000002.png"]
    video = tmp_path / "video.mp4"  # and a video is
    assert run_vsrpp("upscale", source, video, *w).returncode == 0
    assert run_vsrpp("upscale", other, video, *w, "--overwrite").returncode == 0
    assert len(probe(video)["times"]) == 2
    assert not list(tmp_path.glob(".*vsrpp*"))


def test_notices_for_what_would_otherwise_surprise(tmp_path, weights):
    source = encode_video(tmp_path / "in.mp4", moving_scene(2, 48, 64))
    args = ["upscale", source, tmp_path / "out.mp4", "--weights", weights, "--json"]
    result = run_vsrpp(*args, "--resume", "--tile", "32", "--tile-overlap", "4")
    assert result.returncode == 0, result.stderr
    notices = json.loads(result.stdout)["notices"]
    assert "--resume: no interrupted run of out.mp4 was found; starting from the beginning" in notices
    assert any(n.startswith("--tile 32: every tile still runs the network's fixed work") for n in notices)


# ----------------------------------------------------------------------------- bounded store
def watch(folder: Path, stop: threading.Event, seen: dict) -> None:
    while True:
        last = stop.is_set()  # once set, the run is dead: one more look sees all it left
        if folder.is_dir():
            windows = [p for p in folder.glob("window_*.mkv") if ".partial" not in p.name]
            seen["windows"] = max(seen["windows"], len(windows))
            closed = {p.name.split(".")[0] for p in folder.glob("segment_*") if ".partial" not in p.name}
            seen["segments"] = max(seen["segments"], len(closed))  # a video's .json/.packets, or a folder
        if last:
            return
        time.sleep(0.005)


def start(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vsrpp_cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(path: Path, process: subprocess.Popen) -> None:
    while not path.exists():
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)


def kill_at(marker: Path, *args: object) -> dict[str, int]:
    """Start `vsrpp upscale ARGS`, kill it (kill -9) once `marker` appears in its run's folder, and
    say the most windows and closed segments that folder held meanwhile."""
    seen = {"windows": 0, "segments": 0}
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(marker.parent, stop, seen))
    watcher.start()
    process = start("upscale", *args)
    try:
        wait_for(marker, process)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        stop.set()
        watcher.join()
    return seen


def test_store_holds_one_segment_and_resume_is_exact(tmp_path, weights, clip, reference):
    """Killed part-way (kill -9: nothing runs to clean up), the run's folder holds the closed
    segments and never more than one segment's windows; --resume gives the uninterrupted frames."""
    output, partial = tmp_path / "out.mp4", tmp_path / ".out.mp4.vsrpp-partial"
    seen = kill_at(partial / "segment_000001.json", clip, output, "--weights", weights, *SEGMENTED)
    assert 2 <= seen["segments"] < SEGMENTS, "killed part-way"
    assert seen["windows"] <= 1  # 2 windows a segment; the one that closes it is never stored
    assert not output.exists()

    again = run_vsrpp("upscale", clip, output, "--weights", weights, *SEGMENTED)
    assert again.returncode == 1 and "--resume" in one_line(again)
    resumed = run_vsrpp("upscale", clip, output, "--weights", weights, *SEGMENTED, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["windows_resumed"] >= 4  # two closed segments, not recomputed
    assert np.array_equal(read_frames(output), read_frames(reference))
    assert probe(output) == probe(reference)
    assert not partial.exists()


def test_a_frames_folder_commits_every_window_and_stores_none(tmp_path, weights, clip):
    """No encoder to restart: each window's PNGs are a segment of their own, so nothing is kept
    losslessly, and a run killed part-way resumes to the frames of an uninterrupted one."""
    output, partial = tmp_path / "frames", tmp_path / ".frames.vsrpp-partial"
    seen = kill_at(partial / "segment_000002", clip, output, "--weights", weights, *SEGMENTED)
    assert seen["windows"] == 0 and 3 <= seen["segments"] < WINDOWS, seen
    resumed = run_vsrpp("upscale", clip, output, "--weights", weights, *SEGMENTED, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["windows_resumed"] >= 3
    whole = run_vsrpp("upscale", clip, tmp_path / "whole", "--weights", weights, *SEGMENTED)
    assert whole.returncode == 0, whole.stderr
    assert np.array_equal(read_frames(output), read_frames(tmp_path / "whole"))
    assert not partial.exists()


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_cleanly_and_says_how_to_resume(tmp_path, weights, clip, reference, signum, status):
    output, partial = tmp_path / "out.mp4", tmp_path / ".out.mp4.vsrpp-partial"
    process = start("upscale", clip, output, "--weights", weights, *SEGMENTED)
    wait_for(partial / "segment_000000.json", process)
    process.send_signal(signum)
    _, stderr = process.communicate()
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [partial.name]  # no stray .vsrpp-tmp
    assert not list(partial.glob("*.partial*"))
    command = stderr[stderr.index("`vsrpp ") + 1 : stderr.rindex("`")].split()
    assert command[-1] == "--resume" and command[1:4] == ["upscale", str(clip), str(output)]
    if signum == signal.SIGTERM:  # (the same clean-up: resuming once is enough)
        resumed = run_vsrpp(*command[1:])
        assert resumed.returncode == 0, resumed.stderr
        assert np.array_equal(read_frames(output), read_frames(reference))
        assert probe(output) == probe(reference)


def test_a_signal_to_a_shared_run_is_one_line_and_leaves_no_process(tmp_path, weights, clip):
    """The elastic agent's own warning on a signal is not printed: the one line is vsrpp's."""
    output, partial = tmp_path / "out.mp4", tmp_path / ".out.mp4.vsrpp-partial"
    process = start("upscale", clip, output, "--weights", weights, *SEGMENTED, "--nproc-per-node", "2",
                    "--device", "cpu")  # fmt: skip
    wait_for(partial / "segment_000000.json", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate()
    assert process.returncode == 143
    assert len(stderr.strip().splitlines()) == 1 and "--resume" in stderr, stderr
    session = subprocess.run(["ps", "-o", "stat=,args=", "-s", str(process.pid)], capture_output=True, text=True)
    assert [line for line in session.stdout.splitlines() if not line.startswith("Z")] == []  # (dead, unreaped: gone)


# ----------------------------------------------------------------------------- a full disk
def test_output_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, weights, clip):
    """The output file lands on /dev/full (every write: No space left on device). Its header is
    written before any work, so the run stops at once."""
    output = tmp_path / "out.mp4"
    temporary = tmp_path / ".out.mp4.vsrpp-tmp"
    temporary.symlink_to("/dev/full")
    result = run_vsrpp("upscale", clip, output, "--weights", weights, *SEGMENTED)
    assert result.returncode == 1
    line = one_line(result)
    assert f"no space left in {tmp_path}" in line
    assert "nothing was finished yet" in line and "--resume" not in line  # nothing to resume: not offered
    assert list(tmp_path.iterdir()) == []  # the link went with the partial file; nothing else was made
    assert Path("/dev/full").exists()


def test_a_store_that_cannot_grow_cleans_its_partial_window(tmp_path, weights, clip):
    """Files may not grow past 32 KiB (ulimit -f; the kernel then refuses writes with EFBIG, as
    FAT32 does at 4 GB): storing the first lossless window fails."""

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))

    output = tmp_path / "out.mp4"
    args = [sys.executable, "-m", "vsrpp_cli", "upscale", clip, output, "--weights", weights, *SEGMENTED]
    limited = subprocess.run(list(map(str, args)), capture_output=True, text=True, preexec_fn=limit_file_size)
    assert limited.returncode == 1
    assert "ulimit -f" in one_line(limited) and "nothing was finished yet" in limited.stderr  # the first window
    partial = tmp_path / ".out.mp4.vsrpp-partial"
    assert not list(tmp_path.glob("*.partial*")) and not list(partial.glob("*.partial*"))
    assert not (tmp_path / ".out.mp4.vsrpp-tmp").exists()
    resumed = run_vsrpp("upscale", clip, output, "--weights", weights, *SEGMENTED, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert len(probe(output)["times"]) == FRAMES


def test_the_spool_is_written_off_the_networks_thread_and_keeps_what_it_was_given(tmp_path):
    """The network's thread hands a window over and goes on; a window handed over is on disk
    once the writer closes (a failing run keeps what it computed), and a write's error reaches
    the network's thread at its next hand-over or flush, never lost."""
    from vsrpp_cli.run.folder import Spool
    from vsrpp_cli.run.segments import SpoolWriter

    frames = [np.full((8, 8, 3), value, np.uint8) for value in (10, 200)]
    spooling = SpoolWriter(Spool(tmp_path))
    spooling.save(3, frames)
    spooling.save(4, frames)
    assert spooling.thread.name == "vsrpp-spool" and spooling.thread is not threading.current_thread()
    spooling.close()
    assert Spool(tmp_path).stored_windows() == [3, 4]
    assert all(np.array_equal(a, b) for a, b in zip(Spool(tmp_path).load_window(4), frames, strict=True))

    failing = SpoolWriter(Spool(tmp_path / "removed"))  # a spool folder gone from under the worker
    failing.save(0, frames)
    with pytest.raises(OSError):
        failing.flush()
    with pytest.raises(OSError):
        failing.save(1, frames)
    failing.close()  # (never raises over the failure)


def test_a_writing_thread_that_stops_answering_is_one_line_and_not_waited_on(tmp_path, monkeypatch):
    """A segment's encoder whose write never returns (its disk stopped answering): the network's
    thread is not held for ever. Its hand-over gives up after VSRPP_SPOOL_SECONDS without progress
    with the line that names the folder and --resume, and abort leaves the stuck thread alone.
    (The spool's writes: tests/test_faults.py hangs one inside a whole run.)"""
    from vsrpp_cli.errors import OutputError
    from vsrpp_cli.run.segments import SegmentWriter

    monkeypatch.setenv("VSRPP_SPOOL_SECONDS", "1")
    answering = threading.Event()

    class QuietDisk:
        def write(self, image, pts) -> None:
            answering.wait()

        def abort(self) -> None:
            raise AssertionError("a segment whose write is stuck is not touched")

    writer = SegmentWriter(QuietDisk, tmp_path, maxsize=1)
    with pytest.raises(OutputError, match=r"a write to .* has not finished in 1 s .*--resume once it answers"):
        for pts in range(4):  # the first blocks the thread, the second fills the queue, the third waits
            writer.put(None, pts)
    writer.abort()
    assert writer.stuck and writer.thread.is_alive()
    answering.set()  # the disk answers again: the thread ends (other tests count vsrpp's threads)
    writer.stuck = False
    writer.end_thread()
    assert not writer.thread.is_alive()


def test_a_segment_whose_close_never_returns_is_one_line(tmp_path, monkeypatch):
    """The encoder's flush at a segment's end encodes and writes every frame it held back: it runs
    in the encoder's thread, under the same deadline, so a disk that stops answering then is one
    line too, not a run that waits for ever. Frames written before it are written in order."""
    from vsrpp_cli.errors import OutputError
    from vsrpp_cli.run.segments import SegmentWriter

    monkeypatch.setenv("VSRPP_SPOOL_SECONDS", "1")
    answering = threading.Event()
    written: list[int] = []

    class FlushOnAQuietDisk:
        def write(self, image, pts) -> None:
            written.append(pts)

        def close(self) -> None:
            answering.wait(60)  # (bounded: a close run outside the deadline fails the test, not hangs it)

        def abort(self) -> None:
            raise AssertionError("a segment whose close is stuck is not touched")

    writer = SegmentWriter(FlushOnAQuietDisk, tmp_path)
    for pts in range(3):
        writer.put(None, pts)
    with pytest.raises(OutputError, match=r"a write to .* has not finished in 1 s .*--resume once it answers"):
        writer.finish()
    writer.abort()
    assert written == [0, 1, 2] and writer.stuck and writer.thread.is_alive()
    answering.set()  # the disk answers again: the thread ends (other tests count vsrpp's threads)
    writer.stuck = False
    writer.end_thread()
    assert not writer.thread.is_alive()


# ----------------------------------------------------------------------------- wrong values
@pytest.mark.parametrize(
    "args, message",
    [
        (["--tile", "32", "--tile-overlap", "-3"], "'--tile-overlap'"),
        (["--tile", "32", "--tile-overlap", "16"], "--tile 32 must be larger than twice --tile-overlap"),
        (["--chunk-frames", "-1"], "'--chunk-frames'"),
        (["--crf", "99"], "--crf 99: libx264 takes 0 to 51"),
        (["--crf", "-5"], "--crf -5: libx264 takes 0 to 51"),
        (["--codec", "libvpx-vp9", "--crf", "64"], "--crf 64: libvpx-vp9 takes 0 to 63"),
        (["--codec", "ffv1", "--crf", "20"], "--crf: ffv1 has no CRF setting"),
        (["--device", "tpu"], "'--device': 'tpu': choose auto, cpu, cuda or cuda:N"),
        (["--precision", "fp64"], "'--precision'"),
        (["--colour", "rgb"], "'--colour'"),
        (["--deinterlace", "weave"], "'--deinterlace'"),
        (["--codec", "aac"], "--codec aac: that encoder makes audio"),
        (["--codec", "nosuch"], "--codec nosuch: not an encoder this FFmpeg has"),
        (["--preset", "nonsense"], "--preset nonsense: not a libx264 preset; choose one of ultrafast"),
        (["--pix-fmt", "pal8"], "--pix-fmt pal8: libx264 cannot write it"),
        (["--batch", "-1"], "'--batch'"),
        (["--segment-frames", "-1"], "'--segment-frames'"),
    ],
)
def test_wrong_values_are_refused_before_any_work(tmp_path, weights, args, message):
    result = run_vsrpp("upscale", tmp_path / "in.mp4", tmp_path / "out.mp4", "--weights", weights, *args)
    assert result.returncode == 2
    assert message in one_line(result)
    assert list(tmp_path.iterdir()) == []


def test_a_container_that_cannot_hold_the_codec_says_so(tmp_path, weights):
    source = encode_video(tmp_path / "in.mp4", moving_scene(2, 48, 64))
    result = run_vsrpp("upscale", source, tmp_path / "out.webm", "--weights", weights, "--codec", "libx265")
    assert result.returncode == 2
    assert "--codec libx265: a .webm file cannot hold it" in one_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "--size", "0x0"], "'--size': '0x0': give HxW"),
        (["bench", "--frames", "0"], "'--frames'"),
        (["bench", "--precision", "fp64"], "'fp64': choose from fp32, fp16, bf16"),
        (["eval", "--dataset", "Set5"], "'--dataset'"),
        (["finetune", "--from", "reds4", "--data", ".", "--work-dir", ".", "--degradation", "jpeg"], "'--degradation'"),
        (["train", "--amp", "fp8"], "'--amp'"),
        (["train", "--nnodes", "2", "--data-root", "x"], "--nnodes 2: every machine must be told"),
    ],
)
def test_other_commands_refuse_wrong_values(monkeypatch, args, message):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    result = run_vsrpp(*args)
    assert result.returncode == 2
    assert message in one_line(result)


def test_a_text_file_as_weights_is_one_line_everywhere(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    source = encode_video(tmp_path / "in.mp4", moving_scene(2, 48, 64))
    for args in (
        ["upscale", source, tmp_path / "out.mp4", "--weights", text],
        ["info", text],
        ["eval", "--lq", tmp_path, "--gt", tmp_path, "--weights", text],
        ["finetune", "--from", text, "--data", source, "--work-dir", tmp_path / "run"],
    ):
        result = run_vsrpp(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert "not a readable torch checkpoint" in one_line(result)
    assert not (tmp_path / "out.mp4").exists()


def test_finetune_patch_larger_than_the_frames(tmp_path, weights):
    source = encode_video(tmp_path / "holiday.mp4", moving_scene(6, 48, 64))
    result = run_vsrpp(
        "finetune",
        "--from",
        weights,
        "--data",
        source,
        "--work-dir",
        tmp_path / "run",
        "--num-frames",
        "3",
        "--device",
        "cpu",
    )  # the default --patch-size 256 does not fit 64x48 frames
    assert result.returncode == 1
    assert "--patch-size 256 is larger than the frames of holiday (64x48); give --patch-size 48" in one_line(result)


def test_weights_verify_says_what_it_found():
    result = run_vsrpp("weights", "verify")
    assert result.returncode == 0
    assert "no models downloaded" in result.stderr and "nothing to verify" in result.stderr


# ----------------------------------------------------------------------------- what the input is
def test_interlaced_input_is_deinterlaced_with_a_notice(tmp_path, weights):
    scene = moving_scene(6, 48, 64)
    source = tmp_path / "fields.mp4"
    with av.open(str(source), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"x264-params": "interlaced=1:tff=1", "crf": "10"}
        for i, rgb in enumerate(scene):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    notices = []
    summary = upscale(source, tmp_path / "auto.mkv", options_without_network(weights, chunk_frames=6),
                      notice=notices.append)  # fmt: skip
    assert summary.frames == 6
    assert any("interlaced: deinterlaced with FFmpeg's bwdif" in n for n in notices)
    assert probe(tmp_path / "auto.mkv")["times"] == probe(source)["times"]  # one frame per frame, same times
    notices.clear()
    upscale(source, tmp_path / "off.mkv", options_without_network(weights, chunk_frames=6, deinterlace="off"),
            notice=notices.append)  # fmt: skip
    assert any("treated as progressive" in n for n in notices)
    assert not np.array_equal(read_frames(tmp_path / "auto.mkv"), read_frames(tmp_path / "off.mkv"))


def test_alpha_channel_dropped_with_a_notice(tmp_path, weights):
    scene = moving_scene(3, 48, 64)
    source = tmp_path / "alpha.mov"
    with av.open(str(source), "w") as container:
        stream = container.add_stream("png", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgba"
        for rgb in scene:
            rgba = np.concatenate([rgb, np.full((48, 64, 1), 128, np.uint8)], axis=2)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgba, format="rgba")))
        container.mux(stream.encode())
    notices = []
    upscale(source, tmp_path / "out.mp4", Options(weights, chunk_frames=3), notice=notices.append)
    assert any("alpha channel" in n and "dropped" in n for n in notices)


# ----------------------------------------------------------------------------- progress
def test_progress_has_a_total_and_moves_within_a_window(tmp_path, weights):
    source = encode_video(tmp_path / "in.mkv", moving_scene(8, 48, 64), container_format="matroska")
    calls = []
    upscale(
        source,
        tmp_path / "out.mp4",
        Options(weights, chunk_frames=4, chunk_overlap=1),
        lambda d, t: calls.append((d, t)),
    )
    assert calls[0] == (0, 8)  # the total before any work (Matroska states no count: from the duration)
    assert {total for _, total in calls} == {8}
    first_window = [done for done, _ in calls if 0 < done < 4]
    # A tick per propagation step (4 branches x 5 frames), then one per reconstructed frame: the
    # propagation is 2/3 of the window's count (20 of 30 units), the reconstruction the rest.
    assert len(first_window) >= 4 * 5 + 5 - 1
    after_propagation = 4 * 20 / 30
    assert sum(done > after_propagation + 0.01 for done in first_window) >= 4
    assert [done for done, _ in calls] == sorted(done for done, _ in calls) and calls[-1][0] == 8


def test_a_failed_file_stops_its_decode_thread_at_once(tmp_path, weights):
    source = encode_video(tmp_path / "in.mp4", moving_scene(8, 48, 64))

    def interrupt(done: float, total: int | None) -> None:
        if done >= 3:  # within the second window: the first is stored
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        upscale(source, tmp_path / "out.mp4", Options(weights, chunk_frames=2, chunk_overlap=1), interrupt)
    alive = [t.name for t in threading.enumerate() if t.name.startswith("vsrpp-")]
    assert alive in ([], ["vsrpp-network"])  # (the process's one network thread, idle, stays)
    assert not (tmp_path / ".out.mp4.vsrpp-tmp").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.mp4.vsrpp-partial", "in.mp4"]


def test_timestamps_survive_segments_exactly(tmp_path, weights):
    """Irregular timestamps in a fine time base, B-frames, segments joined: every time as it was."""
    pts = [0, 3003, 6006, 9009, 15015, 18018, 21021, 27027, 30030, 33033, 36036, 42042]
    source = encode_video(tmp_path / "vfr.mp4", moving_scene(12, 48, 64), pts=pts, time_base=Fraction(1, 90000))
    for name in ("out.mp4", "out.mov"):  # (Matroska keeps milliseconds: tested in test_upscale)
        upscale(source, tmp_path / name, options_without_network(weights, chunk_frames=2, chunk_overlap=0,
                                                                  segment_frames=2))  # fmt: skip
        assert probe(tmp_path / name)["times"] == probe(source)["times"], name


def test_a_resumed_run_keeps_the_plan_it_was_made_with(tmp_path):
    """Windows sized to free GPU memory: a resumed run reuses the stored size, even where free
    memory has moved since (the fingerprint holds what was asked: 0, automatic)."""
    from vsrpp_cli.run.folder import RunFolder

    fingerprint = {"input": "in.mp4", "chunk_frames": 0}
    first, later = {"chunk_frames": 20, "windows_per_segment": 12}, {"chunk_frames": 35, "windows_per_segment": 7}
    RunFolder.open(tmp_path / "run", fingerprint, lambda: first, False, False).unlock()
    resumed = RunFolder.open(tmp_path / "run", fingerprint, lambda: later, True, False)
    assert resumed.plan == first
    resumed.unlock()
    fresh = RunFolder.open(tmp_path / "run", fingerprint, lambda: later, False, True)
    assert fresh.plan == later


def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path, weights):
    """/sys takes no new files, even from root: the OS error comes back in the user's words."""
    source = encode_video(tmp_path / "in.mp4", moving_scene(2, 48, 64))
    result = run_vsrpp("upscale", source, "/sys/out.mp4", "--weights", weights)
    assert result.returncode == 1
    assert "no permission to write out.mp4" in one_line(result) and "/sys" in result.stderr


@pytest.mark.parametrize("fps, step", [(None, 48000), (30, 40000)])
def test_a_raw_stream_is_timed_from_its_frame_rate(tmp_path, weights, fps, step):
    """A raw H.264 stream carries no timestamps: its frames are timed at its rate (25 here) or at
    --fps, over several segments (each segment's encoder used to count from zero again)."""
    raw = tmp_path / "in.h264"
    with av.open(str(raw), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index, rgb in enumerate(moving_scene(10, 48, 64)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    output = tmp_path / "out.mp4"
    args = ["upscale", raw, output, "--weights", weights, "--chunk-frames", "2", "--chunk-overlap", "1", *NO_NETWORK]
    result = run_vsrpp(*args, "--segment-frames", "4", "--json", *(["--fps", str(fps)] if fps else []))
    assert result.returncode == 0, result.stderr
    assert any("carry no timestamps" in notice for notice in json.loads(result.stdout)["notices"])
    with av.open(str(output)) as container:
        video = container.streams.video[0]
        assert video.time_base == Fraction(1, 1200000)  # the raw stream's
        assert [frame.pts for frame in container.decode(video)] == [index * step for index in range(10)]


def test_an_rgba_frame_folder_says_its_alpha_is_dropped(tmp_path, weights):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, rgb in enumerate(moving_scene(2, 48, 64)):
        rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
        with av.open(str(folder / f"{index}.png"), "w", format="image2") as container:
            stream = container.add_stream("png", rate=1)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "rgba"
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgba, format="rgba")))
            container.mux(stream.encode())
    result = run_vsrpp("upscale", folder, tmp_path / "out.mp4", "--weights", weights, "--json")
    assert result.returncode == 0, result.stderr
    assert any("alpha channel" in notice for notice in json.loads(result.stdout)["notices"])


# ----------------------------------------------------------------------------- real file systems
@pytest.fixture
def tmpfs(tmp_path):
    """A real tmpfs under the test's folder (mounting needs root; elsewhere these tests skip)."""
    mounted = []

    def mount(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_read_only_file_system_is_one_line(tmp_path, weights, clip, tmpfs):
    folder = tmpfs("ro", "size=1m,ro")
    result = run_vsrpp("upscale", clip, folder / "out.mp4", "--weights", weights, *SEGMENTED)
    assert result.returncode == 1
    assert f"{folder} is on a read-only file system" in one_line(result)
    assert list(folder.iterdir()) == []


def test_a_full_disk_stops_cleanly_and_resumes_once_there_is_room(tmp_path, weights, clip, reference, tmpfs):
    """An 80 KiB tmpfs fills during the run (after a segment is committed, before the end; 72 to
    84 KiB do, 68 and 88 miss that: sizes that follow the output's, so the test network's): one
    line, no partial file, the committed segments kept; with room made (the tmpfs grown),
    --resume gives the uninterrupted frames."""
    folder = tmpfs("small", "size=80k")
    output = folder / "out.mp4"
    full = run_vsrpp("upscale", clip, output, "--weights", weights, *SEGMENTED)
    assert full.returncode == 1
    assert f"no space left in {folder}" in one_line(full) and "--resume" in full.stderr
    partial = folder / ".out.mp4.vsrpp-partial"
    assert not list(folder.glob("*.partial*")) and not list(partial.glob("*.partial*"))
    assert not (folder / ".out.mp4.vsrpp-tmp").exists() and not output.exists()
    assert list(partial.glob("segment_*.json"))  # what was committed stays
    subprocess.run(["mount", "-o", "remount,size=16m", str(folder)], check=True)
    resumed = run_vsrpp("upscale", clip, output, "--weights", weights, *SEGMENTED, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert np.array_equal(read_frames(output), read_frames(reference))
    assert probe(output) == probe(reference)


def test_the_same_command_twice_writes_the_same_bytes(tmp_path, weights, clip, reference):
    """libx264, the default codec, over several segments: each segment is encoded by a fresh
    encoder from the same frames and times in every run, and x264 is deterministic for a given
    input and settings (threads included), so the files are identical. (Before the one pipeline,
    two runs differed in their last segment; that is not reproduced since.)"""
    again = tmp_path / "again.mp4"
    assert run_vsrpp("upscale", clip, again, "--weights", weights, *SEGMENTED).returncode == 0
    assert again.read_bytes() == reference.read_bytes()


@pytest.mark.parametrize("name", ["out.mkv", "out.mov", "out.webm", "frames"])
def test_the_same_command_twice_writes_the_same_bytes_in_every_container(tmp_path, weights, clip, name):
    """Matroska and WebM too: FFmpeg's muxer draws a random SegmentUID (and CRCs follow) unless
    told to be bit-exact. A frames folder: the same files. (`--strength 0`: the network's own
    determinism is the mp4 test's above; this is the muxers'.)"""
    runs = []
    for run in ("first", "second"):
        output = tmp_path / run / name
        output.parent.mkdir()
        assert run_vsrpp("upscale", clip, output, "--weights", weights, *SEGMENTED, *NO_NETWORK).returncode == 0
        runs.append({p.name: p.read_bytes() for p in output.iterdir()} if output.is_dir() else output.read_bytes())
    assert runs[0] == runs[1]


def test_a_segment_streamed_to_a_full_disk_stops_the_run_with_the_writers_cause(tmp_path, tmpfs):
    """The writer's disk fills while a worker on another machine streams a segment to it: the run
    is stopped with the writer's own cause (not the worker's broken connection), and nothing of
    the segment is left behind."""
    from vsrpp_cli.run.intake import Intake, upload

    folder = tmpfs("small", "size=64k")
    intake = Intake(folder, "a secret of this run")
    intake.serve(0)
    built = tmp_path / "built"
    built.mkdir()
    (built / "packets").write_bytes(os.urandom(256 << 10))
    (built / "index.json").write_bytes(b'{"packets": []}')
    try:
        with pytest.raises((OSError, VsrppError)):
            upload("127.0.0.1", intake.address["port"], "a secret of this run", 0, 1, 0, built)
    finally:
        intake.close()
    assert intake.refusals == ["the writer could not store segment 0 from worker 1 (No space left on device); make "
                               "room, then run the same command with --resume"]  # fmt: skip
    assert sorted(p.name for p in intake.folder.iterdir()) == [f".run-{intake.token}"]
