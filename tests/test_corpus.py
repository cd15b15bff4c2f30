"""Inputs shaped as people have them, each made with PyAV, each upscaled through one process (and
the ones a shared run reads differently, through two workers) and held to what a player shows of
the input: the frames FFmpeg decodes (edit lists applied), their times from the start of the
timeline (a capture's offset removed, every stream's offset kept), the stream's own rate where
frames carry no times, and every audio and subtitle track. `--strength 0` keeps the network out:
what is tested here is the reading, timing and writing around it."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from harness import NO_NETWORK, run_vsrpp
from media import encode_video, moving_scene, with_subtitles

FRAMES = 12
FAST = [*NO_NETWORK, "--chunk-frames", "4", "--chunk-overlap", "1", "--segment-frames", "4", "-q"]


# ----------------------------------------------------------------------------- the corpus
def cut_without_reencoding(folder: Path) -> Path:
    """As `ffmpeg -ss 0.24 -c copy` writes an MP4: the packets before the cut kept from the
    keyframe on and hidden by an edit list (FFmpeg marks them discard: no player shows them)."""
    whole = encode_video(folder / "whole.mp4", moving_scene(FRAMES + 6, 32, 48))
    path = folder / "cut.mp4"
    with av.open(str(whole)) as source, av.open(str(path), "w") as out:
        video = source.streams.video[0]
        stream = out.add_stream_from_template(video)
        shift = round(Fraction(6, 25) / video.time_base)  # 6 frames
        for packet in source.demux(video):
            if packet.size:
                packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
                packet.stream = stream
                out.mux(packet)
    return path


def raw_h264_at_24(folder: Path) -> Path:
    return encode_video(folder / "camera.h264", moving_scene(FRAMES, 32, 48), fps=24, container_format="h264")


def raw_mjpeg_without_a_rate(folder: Path) -> Path:
    return encode_video(folder / "webcam.mjpeg", moving_scene(FRAMES, 32, 48), codec="mjpeg", pix_fmt="yuvj420p",
                        container_format="mjpeg")  # fmt: skip


def tracks_in_matroska(folder: Path) -> Path:
    """A video, a stereo and a mono AAC track, and SRT subtitles."""
    stereo = encode_video(folder / "stereo.mp4", moving_scene(FRAMES, 32, 48), audio_channels=2)
    mono = encode_video(folder / "mono.mp4", moving_scene(2, 32, 48), audio_channels=1)
    both = folder / "both.mkv"
    with av.open(str(stereo)) as first, av.open(str(mono)) as second, av.open(str(both), "w") as out:
        wanted = [*first.streams, second.streams.audio[0]]
        copies = {id(s): out.add_stream_from_template(s) for s in wanted}
        for container, streams in ((first, list(first.streams)), (second, [second.streams.audio[0]])):
            for packet in container.demux(streams):
                if packet.size:
                    packet.stream = copies[id(packet.stream)]
                    out.mux(packet)
    return with_subtitles(both, [(0, 200, "one"), (240, 400, "two")], folder / "tracks.mkv")


def variable_rate(folder: Path) -> Path:
    pts = [0, 512, 1024, 2048, 2560, 3584, 4096, 4608, 6144, 6656, 7168, 8192]
    return encode_video(folder / "vfr.mp4", moving_scene(FRAMES, 32, 48), pts=pts, time_base=Fraction(1, 12800),
                        audio_channels=2)  # fmt: skip


def anamorphic(folder: Path) -> Path:
    path = folder / "anamorphic.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(4, 3)
        for rgb in moving_scene(FRAMES, 32, 48):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return path


def hdr10_hevc(folder: Path) -> Path:
    """10-bit HEVC tagged BT.2020 with the PQ transfer (HDR10); 96x64, as x265 corrupts its heap
    on frames smaller than its 64-pixel coding tree unit."""
    path = folder / "hdr10.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx265", rate=25, options={"x265-params": "log-level=error"})
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p10le"
        ctx = stream.codec_context
        ctx.colorspace, ctx.color_primaries, ctx.color_trc = 9, 9, 16
        for rgb in moving_scene(FRAMES, 64, 96):
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint16) * 257, format="rgb48le")
            out.mux(stream.encode(frame.reformat(format="yuv420p10le")))
        out.mux(stream.encode())
    return path


def capture_starting_late(folder: Path) -> Path:
    """MPEG-TS whose first picture is at 1.4 s, as broadcast captures start."""
    pts = [35 + index for index in range(FRAMES)]
    return encode_video(folder / "capture.ts", moving_scene(FRAMES, 32, 48), pts=pts, time_base=Fraction(1, 25),
                        container_format="mpegts")  # fmt: skip


def avi_with_b_frames(folder: Path) -> Path:
    return encode_video(folder / "old.avi", moving_scene(FRAMES, 32, 48), container_format="avi")


def webm(folder: Path) -> Path:
    return encode_video(folder / "clip.webm", moving_scene(FRAMES, 32, 48), codec="libvpx-vp9")


def size_changes(folder: Path) -> Path:
    """Two H.264 streams of different sizes joined in one MPEG-TS (as a capture whose source
    changed size), timed at 25 frames/s."""
    joined = folder / "joined.h264"
    with open(joined, "wb") as raw:
        for height, width in ((32, 48), (40, 56)):  # without B-frames: decode order is display order
            with av.open(raw, "w", format="h264") as out:
                stream = out.add_stream("libx264", rate=25, options={"x264-params": "bframes=0"})
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                for rgb in moving_scene(6, height, width):
                    out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
                out.mux(stream.encode())
    path = folder / "joined.ts"
    with av.open(str(joined)) as source, av.open(str(path), "w", format="mpegts") as out:
        video = source.streams.video[0]
        stream = out.add_stream_from_template(video)
        stream.time_base = Fraction(1, 90000)
        for index, packet in enumerate(p for p in source.demux(video) if p.size):
            packet.pts = packet.dts = index * 3600
            packet.time_base = Fraction(1, 90000)
            packet.stream = stream
            out.mux(packet)
    return path


CORPUS = {
    "cut": cut_without_reencoding,
    "raw-24": raw_h264_at_24,
    "raw-mjpeg": raw_mjpeg_without_a_rate,
    "tracks": tracks_in_matroska,
    "vfr": variable_rate,
    "anamorphic": anamorphic,
    "hdr10": hdr10_hevc,
    "capture": capture_starting_late,
    "avi": avi_with_b_frames,
    "webm": webm,
    "size-change": size_changes,
}
SHARED = ["cut", "vfr", "capture", "size-change", "tracks", "raw-mjpeg"]  # read by seeking in a shared run


# ----------------------------------------------------------------------------- what a player shows
def player_view(path: Path) -> dict:
    """Frame times in seconds from the first frame (frames without times: at the stream's rate,
    else 25), where the first frame and the audio start on the timeline, the tracks, the first
    frame's size, aspect and colour."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        ctx = video.codec_context
        rate = float(ctx.framerate or 25) if container.format.name in ("h264", "mjpeg") else None
        frames = list(container.decode(video))
        times = [index / rate if rate else frame.time for index, frame in enumerate(frames)]
        audio = [first_time(container, s) for s in container.streams.audio[:1]]
        return {
            "times": [round(t - times[0], 3) for t in times],
            "audio_after_video": [round(t - times[0], 3) for t in audio],
            "audio": sorted((s.codec_context.name, s.channels) for s in container.streams.audio),
            "subtitles": len(container.streams.subtitles),
            "size": (frames[0].width, frames[0].height),
            "aspect": video.sample_aspect_ratio or Fraction(1),
            "colour": (int(ctx.color_primaries), int(ctx.color_trc), int(ctx.colorspace)),
            "depth": max(c.bits for c in av.VideoFormat(ctx.pix_fmt).components),
        }


def first_time(container: av.container.InputContainer, stream: av.stream.Stream) -> float:
    """The earliest presentation time of the stream's packets that a player shows, in seconds."""
    with av.open(container.name) as again:
        mine = again.streams[stream.index]
        return min(float(p.pts * p.time_base) for p in again.demux(mine) if p.pts is not None and not p.is_discard)


def timeline_start(path: Path) -> float:
    """Where the first picture or sound is on the timeline a player shows (0 is its start)."""
    with av.open(str(path)) as container:
        return min(first_time(container, s) for s in [*container.streams.video[:1], *container.streams.audio])


def expected_output(view: dict, scale: int = 4) -> dict:
    """The input's view, 4x larger; untagged colour (these are under 720 lines) written as the
    BT.601 it was read as, tagged (README: Colour)."""
    untagged = view["colour"][0] == 2
    return {**view, "size": (view["size"][0] * scale, view["size"][1] * scale),
            "colour": (6, 6, 6) if untagged else view["colour"]}  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("corpus")
    return {name: make(folder) for name, make in CORPUS.items()}


@pytest.fixture(scope="module")
def weights(official_checkpoint) -> Path:
    return official_checkpoint(8, 1, True, seed=8)[0]


def test_the_corpus_is_what_it_claims(corpus):
    """The inputs are shaped as named: a hidden cut, no times in raw streams, a late start, a
    size change (else the tests below would prove nothing)."""
    with av.open(str(corpus["cut"])) as container:
        stream = container.streams.video[0]
        hidden = sum(p.is_discard for p in container.demux(stream) if p.size)
        assert stream.frames == FRAMES + 6 and hidden == 6  # the container counts what no one sees
    assert len(player_view(corpus["cut"])["times"]) == FRAMES
    with av.open(str(corpus["raw-24"])) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 25 and stream.codec_context.framerate == 24  # the demuxer's default, the SPS's
        assert next(container.decode(stream)).pts is None
    assert timeline_start(corpus["capture"]) == 1.4
    with av.open(str(corpus["size-change"])) as container:
        assert {(f.width, f.height) for f in container.decode(video=0)} == {(48, 32), (56, 40)}


@pytest.mark.parametrize("name", list(CORPUS))
def test_one_process_gives_what_a_player_shows_of_the_input(tmp_path, corpus, weights, name):
    source = corpus[name]
    output = tmp_path / "out.mkv"
    result = run_vsrpp("upscale", source, output, "--weights", weights, *FAST, "--json")
    assert result.returncode == 0, result.stderr
    wanted = expected_output(player_view(source))
    if name == "size-change":
        wanted["size"] = (48 * 4, 32 * 4)  # every frame at the first frames' size
    got = player_view(output)
    # AAC's priming (1024 samples) copied from MP4 may stay at a negative time rather than hidden
    # by an edit list: the same samples at the same times, one priming frame apart at most.
    for ours, theirs in zip(got.pop("audio_after_video"), wanted.pop("audio_after_video"), strict=True):
        assert abs(ours - theirs) <= 1024 / 48000 + 0.001
    assert got == wanted
    assert timeline_start(output) < 0.05  # no blank lead-in (the capture's 1.4 s included)
    assert "missing" not in result.stdout and "ends early" not in result.stdout


@pytest.mark.parametrize("name", SHARED)
def test_two_workers_give_what_one_process_gives(tmp_path, monkeypatch, corpus, weights, name):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    source = corpus[name]
    one, two = tmp_path / "one.mkv", tmp_path / "two.mkv"
    # The default encoder, libx264, at 192 pixels wide: 12 macroblocks, where x264's AVX-512 code
    # made the bytes depend on the heap (video/encoders.py), seen here as another last segment in
    # one process than in two.
    assert run_vsrpp("upscale", source, one, "--weights", weights, *FAST).returncode == 0
    result = run_vsrpp("upscale", source, two, "--weights", weights, *FAST, "--nproc-per-node", "2",
                       "--device", "cpu")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert player_view(two) == player_view(one)
    assert two.read_bytes() == one.read_bytes()


def test_a_raw_stream_without_times_is_refused_for_workers_in_one_line(tmp_path, corpus, weights):
    """Its frames carry no times, so no worker can seek to one: one process reads it on."""
    result = run_vsrpp("upscale", corpus["raw-24"], tmp_path / "out.mkv", "--weights", weights, *FAST,
                       "--nproc-per-node", "2", "--device", "cpu")  # fmt: skip
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "carry no timestamps; it cannot be shared among workers" in result.stderr
    assert list(tmp_path.iterdir()) == []
