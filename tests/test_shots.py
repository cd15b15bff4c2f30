"""Shots, not files: cuts found in real footage (and fades, flashes and pans left alone), windows
that stop at cuts, and every way of running (the command, the library, two workers, a resume, a
pipe) giving at every frame what each shot upscaled on its own gives, bit for bit."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from faults import one_line
from harness import NO_NETWORK, run_vsrpp
from media import encode_video, read_frames, real_clip, spliced_footage

import vsrpp_cli
from vsrpp_cli.run.windows import WindowTable, temporal_windows
from vsrpp_cli.video.shots import LOOKAHEAD, CutPass, detect_cuts, marking_cuts, read_cuts

WINDOWS = ["--chunk-frames", "4", "--chunk-overlap", "2", "--device", "cpu", "-q"]
SHOT_LENGTHS = (6, 7, 5)  # a shot of two windows, one of two with a short second, one of two
CUTS = [6, 13]


# ----------------------------------------------------------------------------- the layout
@pytest.mark.parametrize("seed", range(6))
def test_the_window_table_is_the_stream_layout_and_no_window_crosses_a_cut(seed):
    rng = random.Random(seed)
    total, chunk, overlap = rng.randint(1, 60), rng.randint(1, 9), rng.randint(0, 5)
    cuts = sorted(rng.sample(range(1, total), min(total - 1, rng.randint(0, 6)))) if total > 1 else []
    streamed = list(temporal_windows(range(total), chunk, overlap, set(cuts).__contains__))
    table = WindowTable(chunk, overlap, cuts, total)
    assert len(table) == len(streamed) and table.span(len(table)) is None
    open_ended = WindowTable(chunk, overlap, cuts, None)  # a run that does not know the frame count
    for window in streamed:
        span = table.span(window.index)
        assert (span.start, span.keep_start, span.keep_stop, span.stop) == (
            window.start, window.kept_range.start, window.kept_range.stop, window.start + len(window.items))
        assert window.items == list(range(span.start, span.stop))
        unbounded = open_ended.span(window.index)
        assert (unbounded.start, unbounded.keep_start) == (span.start, span.keep_start)
        shot = [0, *cuts, total]
        first = max(c for c in shot if c <= span.keep_start)
        assert span.start >= first and span.stop <= min(c for c in shot if c > span.keep_start)
        assert all(table.window_of(frame) == window.index for frame in window.kept_range)
    assert [f for w in streamed for f in w.kept_range] == list(range(total))


def test_each_shot_is_windowed_as_a_video_of_its_own():
    """Shots of 6 and 3 frames with chunk 4, overlap 2: the second shot is one window, its
    context stops at the cut, and the first shot's windows start at its first frame."""
    table = WindowTable(4, 2, [6], 9)
    spans = [table.span(i) for i in range(len(table))]
    assert [(s.start, s.keep_start, s.keep_stop, s.stop) for s in spans] == [(0, 0, 4, 6), (2, 4, 6, 6), (6, 6, 9, 9)]
    no_cuts = WindowTable(4, 2, [], 9)
    assert [(s.start, s.keep_start, s.keep_stop, s.stop) for s in map(no_cuts.span, range(3))] == [
        (0, 0, 4, 6), (2, 4, 8, 9), (6, 8, 9, 9)]  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_a_window_settled_by_the_cuts_known_so_far_is_where_all_of_them_put_it(seed):
    """A shared run lays windows out while its cuts are still being found: a window that
    `settled` says is laid out for good, with only the cuts before `decided` known, is the
    window of the whole video's table, and stays settled as more is known."""
    rng = random.Random(seed)
    total, chunk, overlap = rng.randint(2, 60), rng.randint(1, 9), rng.randint(0, 5)
    cuts = sorted(rng.sample(range(1, total), min(total - 1, rng.randint(0, 6))))
    final = WindowTable(chunk, overlap, cuts, total)
    was_settled: set[int] = set()
    for decided in range(total + 1):
        known = WindowTable(chunk, overlap, [cut for cut in cuts if cut < decided], total)
        settled = {index for index in range(total) if known.settled(index, decided)}
        assert was_settled <= settled
        assert all(known.span(index) == final.span(index) for index in settled)
        was_settled = settled


def test_the_cut_pass_says_what_it_has_decided_as_it_reads(footage):
    """The pass in its thread: the cuts it reports are those of the frames it has decided, in
    the end all of detect_cuts'; an error of the frames it reads is handed to the one who asks."""
    frames, cuts, _ = footage
    gate = threading.Semaphore(0)

    def given(images):
        for image in images:
            gate.acquire()
            yield image

    found = CutPass(given(frames))
    reports = []
    for _ in range(len(frames)):
        gate.release()
        while (report := found.progress())[0] < len(reports) + 1 - LOOKAHEAD:
            time.sleep(0.001)
        reports.append(report)
    while not (report := found.progress())[2]:  # the last frame read: the rest decided
        time.sleep(0.001)
    found.close()
    assert report == (len(frames), cuts, True) and cuts == detect_cuts(frames)
    for decided, known, _ in reports:
        assert known == [cut for cut in cuts if cut < decided]

    def broken():
        yield frames[0]
        raise ValueError("a packet that does not decode")

    failing = CutPass(broken())
    failing.close()
    with pytest.raises(ValueError, match="does not decode"):
        failing.progress()


# ----------------------------------------------------------------------------- the detector
@pytest.fixture(scope="module")
def footage():
    return spliced_footage(64, 40)


def test_cuts_in_real_footage_are_found_and_a_flash_a_dissolve_and_a_pan_are_not(tmp_path, footage,
                                                                                 official_checkpoint):
    """Real clips joined (and a trailer's own cuts), encoded with H.264 and read back as a run
    reads them: every cut found, at its frame, nothing else; the stream's detector (deciding
    3 frames late) finds the same."""
    frames, cuts, non_cuts = footage
    path = encode_video(tmp_path / "spliced.mp4", frames)
    with av.open(str(path)) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert detect_cuts(decoded) == cuts
    assert not set(cuts) & {frame for frames in non_cuts.values() for frame in frames}
    seen: set[int] = set()
    passed = list(marking_cuts(decoded, lambda image: image, seen))
    assert sorted(seen) == cuts and len(passed) == len(decoded)
    weights = official_checkpoint(8, 1, True, seed=3)[0]
    found = run_vsrpp("upscale", path, tmp_path / "out.mp4", "--weights", weights, *NO_NETWORK, "--json",
                      *WINDOWS)  # fmt: skip
    assert json.loads(found.stdout)["cuts"] == cuts


def test_single_shots_of_real_footage_have_no_cut():
    for name in ("bigbuckbunny.mp4", "carphone_pristine.mp4"):
        assert detect_cuts(real_clip(name, 0, 120, 64, 40)) == []


def test_cuts_are_read_from_frame_numbers_times_and_pyscenedetect_csv(tmp_path):
    listed = tmp_path / "cuts.txt"
    listed.write_text("# cuts\n6\n0.52s\n00:00:01.000\n")
    assert read_cuts(listed, 25) == [6, 13, 25]
    # As `scenedetect list-scenes` writes it (0.6: frames from 1; a timecode line first).
    csv = tmp_path / "video-Scenes.csv"
    csv.write_text(
        "Timecode List:,00:00:00.240,00:00:00.520\n"
        "Scene Number,Start Frame,Start Timecode,Start Time (seconds),End Frame,End Timecode,End Time (seconds),"
        "Length (frames),Length (timecode),Length (seconds)\n"
        "1,1,00:00:00.000,0.000,6,00:00:00.240,0.240,6,00:00:00.240,0.240\n"
        "2,7,00:00:00.240,0.240,13,00:00:00.520,0.520,7,00:00:00.280,0.280\n"
        "3,14,00:00:00.520,0.520,18,00:00:00.720,0.720,5,00:00:00.200,0.200\n"
    )
    assert read_cuts(csv, 25) == CUTS


@pytest.mark.parametrize(
    "setting, says",
    [("nowhere.txt", "give auto, off, or a file of cuts"), ("bad.txt", "is neither a frame number"),
     ("late.txt", "frame 99 is past the input's end")],
)  # fmt: skip
def test_a_bad_scene_cut_setting_is_one_line(tmp_path, monkeypatch, shots, setting, says):
    """Refused before any work, and nothing left: a cut past the end where the frames are counted
    (a shared run counts them)."""
    (tmp_path / "bad.txt").write_text("6\nsoon\n")
    (tmp_path / "late.txt").write_text("99\n")
    weights, spliced, _ = shots
    monkeypatch.chdir(tmp_path)
    failed = run_vsrpp("upscale", spliced, tmp_path / "out", "--weights", weights, "--scene-cuts", setting,
                       "--nproc-per-node", "2" if setting == "late.txt" else "1", *WINDOWS)  # fmt: skip
    assert failed.returncode != 0 and says in one_line(failed.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "late.txt"]


# ----------------------------------------------------------------------------- bit for bit
@pytest.fixture(scope="module")
def shots(tmp_path_factory, official_checkpoint):
    """Three real shots (a trailer, a phone call, a cartoon) joined at frames 6 and 13, stored
    losslessly (FFV1), so that each shot cut out on its own decodes to the same samples; and
    each shot upscaled on its own, as frames."""
    folder = tmp_path_factory.mktemp("shots")
    weights = official_checkpoint(8, 1, True, seed=3)[0]
    parts = [real_clip("bikes.mp4", 0, 6, 48, 32), real_clip("carphone_pristine.mp4", 0, 7, 48, 32),
             real_clip("bigbuckbunny.mp4", 0, 5, 48, 32)]  # fmt: skip
    spliced = encode_video(folder / "spliced.mkv", np.concatenate(parts), codec="ffv1")
    alone = []
    for number, part in enumerate(parts):
        shot = encode_video(folder / f"shot{number}.mkv", part, codec="ffv1")
        out = folder / f"shot{number}"
        ran = run_vsrpp("upscale", shot, out, "--weights", weights, "--scene-cuts", "off", *WINDOWS)
        assert ran.returncode == 0, ran.stderr
        alone.append(read_frames(out))
    return weights, spliced, np.concatenate(alone)


def test_the_command_upscales_each_shot_as_if_alone(tmp_path, shots):
    """Cuts found in the frames (auto; given in a file: the resume test below): the output is
    each shot's own, bit for bit. Straight through (off), the frames after a cut differ: the
    recurrence did cross it."""
    weights, spliced, alone = shots
    out = tmp_path / "out"
    found = run_vsrpp("upscale", spliced, out, "--weights", weights, "--json", *WINDOWS)
    assert json.loads(found.stdout)["cuts"] == CUTS
    assert np.array_equal(read_frames(out), alone)
    through = run_vsrpp("upscale", spliced, tmp_path / "through", "--weights", weights, "--scene-cuts", "off",
                        *WINDOWS)  # fmt: skip
    crossed = read_frames(tmp_path / "through")
    assert through.returncode == 0 and not np.array_equal(crossed[CUTS[0]], alone[CUTS[0]])


def test_the_library_upscales_each_shot_as_if_alone(shots):
    weights, spliced, _ = shots
    with av.open(str(spliced)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    upscaler = vsrpp_cli.Upscaler(weights=weights, device="cpu", chunk_frames=4, chunk_overlap=2, scene_cuts="off")
    bounds = list(itertools.pairwise([0, *CUTS, len(frames)]))
    alone = [image for a, b in bounds for image in upscaler.frames(frames[a:b])]
    for setting in ("auto", CUTS):
        cut = vsrpp_cli.Upscaler(weights=weights, device="cpu", chunk_frames=4, chunk_overlap=2, scene_cuts=setting)
        assert all(np.array_equal(a, b) for a, b in zip(cut.frames(frames), alone, strict=True))


def test_two_workers_start_before_the_cuts_are_all_found_and_upscale_each_shot_as_if_alone(tmp_path, shots):
    """A shared run's writer finds the cuts while its workers work. Its pass hangs at the 12th
    frame (cuts known up to frame 8): the windows laid out by then (each a segment of this frames
    output) are stored meanwhile. Killed there, and resumed (the pass read again): each shot's
    own frames, bit for bit."""
    weights, spliced, alone = shots
    out, partial = tmp_path / "out", tmp_path / ".out.vsrpp-partial"
    shared = [*WINDOWS, "--nproc-per-node", "2"]
    hanging = {**os.environ, "VSRPP_FAILPOINTS": "cuts@12=hang"}
    command = [sys.executable, "-m", "vsrpp_cli", "upscale", spliced, out, "--weights", weights, *shared]
    process = subprocess.Popen(command, env=hanging, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        # (A run that waited for the pass would wait for ever: given up after minutes, not seconds.)
        deadline = time.monotonic() + 300
        while not all((partial / f"segment_00000{n}").is_dir() for n in (0, 1)):  # windows 0, 1: the first shot
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no segment stored while the cut pass hangs"
            time.sleep(0.01)
        assert json.loads((partial / "run.json").read_text())["plan"]["cuts"] is None  # still being found
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    resumed = run_vsrpp("upscale", spliced, out, "--weights", weights, "--resume", "--json", *shared)
    assert resumed.returncode == 0, resumed.stderr
    facts = json.loads(resumed.stdout)
    assert facts["cuts"] == CUTS and facts["windows_resumed"] >= 2
    assert np.array_equal(read_frames(out), alone)


def test_a_resumed_run_upscales_each_shot_as_if_alone(tmp_path, monkeypatch, shots):
    """Cuts given in a file; stopped after its third window (inside the second shot), then
    resumed: the same shots."""
    weights, spliced, alone = shots
    out = tmp_path / "out"
    (tmp_path / "cuts.txt").write_text("6\n13\n")
    given = [*WINDOWS, "--scene-cuts", tmp_path / "cuts.txt"]
    monkeypatch.setenv("VSRPP_FAILPOINTS", "network@3=raise")
    assert run_vsrpp("upscale", spliced, out, "--weights", weights, *given).returncode != 0
    monkeypatch.delenv("VSRPP_FAILPOINTS")
    resumed = run_vsrpp("upscale", spliced, out, "--weights", weights, "--resume", "--json", *given)
    assert resumed.returncode == 0, resumed.stderr
    facts = json.loads(resumed.stdout)
    assert facts["windows_resumed"] == 2 and facts["cuts"] == CUTS
    assert np.array_equal(read_frames(out), alone)


def test_a_pipe_upscales_each_shot_as_if_alone(tmp_path, shots):
    """Read once from a FIFO: each cut is found within the frames the window holds anyway."""
    weights, spliced, alone = shots
    fifo = tmp_path / "live.mkv"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: Path(fifo).write_bytes(spliced.read_bytes()))
    writer.start()
    summary = vsrpp_cli.upscale(fifo, tmp_path / "out", weights=weights, device="cpu", chunk_frames=4,
                                chunk_overlap=2)  # fmt: skip
    writer.join()
    assert summary.cuts == CUTS
    assert np.array_equal(read_frames(tmp_path / "out"), alone)


def test_preview_shows_each_shot_as_if_alone(tmp_path, shots):
    """The moments right after and right before a cut: the windows upscale runs for them."""
    weights, spliced, alone = shots
    result = run_vsrpp("preview", spliced, "--weights", weights, "--at", "0.24", "--at", "0.48", "--output",
                       tmp_path / "looks", "--json", *WINDOWS[:4])  # fmt: skip
    assert result.returncode == 0, result.stderr
    moments = json.loads(result.stdout)["moments"]
    assert [m["frame"] for m in moments] == [6, 12]
    for moment in moments:
        image = read_frames(Path(moment["image"]))[0]
        x, y, w, h = moment["panels"][1]["box"]
        assert np.array_equal(image[y : y + h, x : x + w], alone[moment["frame"]])


# ----------------------------------------------------------------------------- inputs as people have them
@pytest.fixture(scope="module")
def h264_shots(tmp_path_factory, shots):
    """The three shots in lossless H.264 (x264 at crf 0: a player shows the very samples), each
    upscaled on its own: H.264's chroma is sited apart from FFV1's, so these are the reference."""
    weights = shots[0]
    folder = tmp_path_factory.mktemp("h264")
    parts = [real_clip("bikes.mp4", 0, 6, 48, 32), real_clip("carphone_pristine.mp4", 0, 7, 48, 32),
             real_clip("bigbuckbunny.mp4", 0, 5, 48, 32)]  # fmt: skip
    alone = []
    for number, part in enumerate(parts):
        shot = encode_video(folder / f"shot{number}.mp4", part, crf=0)
        ran = run_vsrpp(
            "upscale", shot, folder / f"shot{number}", "--weights", weights, "--scene-cuts", "off", *WINDOWS
        )
        assert ran.returncode == 0, ran.stderr
        alone.append(read_frames(folder / f"shot{number}"))
    return weights, np.concatenate(parts), np.concatenate(alone)


def test_shots_of_a_cut_hidden_by_an_edit_list_are_the_shots_a_player_shows(tmp_path, h264_shots):
    """As `ffmpeg -ss ... -c copy` leaves an MP4: 4 frames of another shot before the first are
    decoded but hidden by an edit list. Cut numbers count the frames a player shows, found and
    given alike, and the hidden frames neither start a shot nor reach into one."""
    weights, frames, alone = h264_shots
    hidden = real_clip("carphone_pristine.mp4", 20, 24, 48, 32)
    whole = encode_video(tmp_path / "whole.mp4", np.concatenate([hidden, frames]), crf=0)
    cut = tmp_path / "cut.mp4"
    with av.open(str(whole)) as source, av.open(str(cut), "w") as out:
        video = source.streams.video[0]
        stream = out.add_stream_from_template(video)
        shift = round(len(hidden) / 25 / video.time_base)
        for packet in source.demux(video):
            if packet.size:
                packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, stream
                out.mux(packet)
    (tmp_path / "cuts.txt").write_text("6\n0.52s\n")
    for setting in ("auto", tmp_path / "cuts.txt"):
        out = tmp_path / f"out-{len(str(setting))}"
        result = run_vsrpp("upscale", cut, out, "--weights", weights, "--scene-cuts", setting, "--json", *WINDOWS)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["cuts"] == CUTS
        assert np.array_equal(read_frames(out), alone)


def test_cut_times_in_a_raw_stream_are_read_at_its_own_rate(tmp_path, h264_shots):
    """A raw H.264 stream at 24 frames/s (its SPS says so; the raw demuxer would say 25): 0.542 s
    is frame 13 at 24 and would be 14 at 25."""
    weights, frames, alone = h264_shots
    raw = encode_video(tmp_path / "camera.h264", frames, fps=24, container_format="h264", crf=0)
    (tmp_path / "cuts.txt").write_text("0.25s\n00:00:00.542\n")
    out = tmp_path / "out"
    result = run_vsrpp("upscale", raw, out, "--weights", weights, "--scene-cuts", tmp_path / "cuts.txt", "--json",
                       *WINDOWS)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cuts"] == CUTS
    assert np.array_equal(read_frames(out), alone)
