"""`vsrpp upscale` end to end on videos the tests encode: frames, timestamps, audio, colour,
windows, tiles, resume, and every bad input."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from harness import NO_NETWORK, options_without_network, run_vsrpp
from media import decode_rgb, encode_video, moving_scene, probe, with_subtitles
from reference import random_official_checkpoint

from vsrpp_cli.run.engine import slow_on_this_cpu
from vsrpp_cli.run.pipeline import Options, upscale
from vsrpp_cli.video.inputs import open_source

VFR_PTS = [0, 512, 1024, 2048, 2560, 3584, 4096, 4608, 6144, 6656, 7168, 8192]  # in 1/12800 s


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "small.pth"
    torch.save(random_official_checkpoint(8, 1, True, seed=5), path)
    return path


@pytest.fixture(scope="module")
def bilinear_weights(tmp_path_factory) -> Path:
    """A network whose output is exactly the bilinear x4 of its input (conv_last is zero)."""
    checkpoint = random_official_checkpoint(8, 1, True, seed=6)
    for key in ("generator.conv_last.weight", "generator.conv_last.bias"):
        checkpoint["state_dict"][key].zero_()
    path = tmp_path_factory.mktemp("weights") / "bilinear.pth"
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def vfr_video(tmp_path_factory) -> Path:
    """12 frames at irregular times with 5.1 AAC audio."""
    path = tmp_path_factory.mktemp("media") / "vfr.mp4"
    return encode_video(path, moving_scene(12, 32, 48), pts=VFR_PTS, time_base=Fraction(1, 12800), audio_channels=6)


def read_frames(path: Path) -> np.ndarray:
    if path.is_dir():
        return np.stack(
            [av.open(str(p)).decode(video=0).__next__().to_ndarray(format="rgb24") for p in sorted(path.iterdir())]
        )
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(float) - b.astype(float)) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def vsrpp(*args: str):
    return run_vsrpp(*args)


# ----------------------------------------------------------------------------- nothing lost
@pytest.mark.parametrize("extension", [".mp4", ".mkv", ".mov"])
def test_every_frame_timestamp_and_audio_kept(tmp_path, weights, vfr_video, extension):
    output = tmp_path / f"out{extension}"
    summary = upscale(vfr_video, output, options_without_network(weights, chunk_frames=5, chunk_overlap=2))
    before, after = probe(vfr_video), probe(output)
    assert summary.frames == 12
    assert after["times"] == before["times"]  # variable frame rate kept, to the tick
    assert (after["width"], after["height"]) == (192, 128)
    assert after["audio"] == before["audio"] == [("aac", 6, 48000)]
    if extension != ".mkv":  # MP4/MOV trim the AAC priming through the edit list; Matroska keeps it
        assert after["audio_samples"] == before["audio_samples"]
    assert not list(tmp_path.glob(".*"))  # no temporary file or partial run left


def test_webm_transcodes_audio_it_cannot_hold(tmp_path, weights, vfr_video):
    notices = []
    upscale(vfr_video, tmp_path / "out.webm", options_without_network(weights, chunk_frames=12), notice=notices.append)
    after = probe(tmp_path / "out.webm")
    assert after["times"] == probe(vfr_video)["times"]
    assert after["audio"] == [("opus", 6, 48000)]
    assert any("transcoded to libopus" in n for n in notices)


def test_subtitles_are_copied_or_left_out_with_a_notice(tmp_path, weights):
    video = encode_video(tmp_path / "video.mp4", moving_scene(6, 32, 48))
    source = with_subtitles(video, [(0, 100, "Hello"), (120, 200, "World")], tmp_path / "subtitled.mkv")
    upscale(source, tmp_path / "out.mkv", options_without_network(weights, chunk_frames=6))
    with av.open(str(tmp_path / "out.mkv")) as container:
        assert [s.type for s in container.streams] == ["video", "subtitle"]
        cues = [(p.pts, bytes(p)) for p in container.demux(container.streams.subtitles[0]) if p.size]
    assert cues == [(0, b"Hello"), (120, b"World")]

    notices: list[str] = []
    upscale(source, tmp_path / "out.mp4", options_without_network(weights, chunk_frames=6), notice=notices.append)
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert [s.type for s in container.streams] == ["video"]
    assert any("subtitle stream 1" in n and "left out" in n for n in notices), notices


def test_ten_bit_in_ten_bit_out(tmp_path, weights):
    scene = moving_scene(6, 32, 48).astype(np.uint16) * 257
    source = encode_video(tmp_path / "deep.mkv", scene, pix_fmt="yuv420p10le")
    upscale(source, tmp_path / "out.mkv", options_without_network(weights, chunk_frames=6))
    assert probe(tmp_path / "out.mkv")["pix_fmt"] == "yuv420p10le"
    upscale(source, tmp_path / "frames", options_without_network(weights, chunk_frames=6))
    with av.open(str(tmp_path / "frames" / "00000000.png")) as png:
        assert png.streams.video[0].codec_context.pix_fmt == "rgb48be"  # 16-bit PNG


# ----------------------------------------------------------------------------- colour
def colour_patches(height: int, width: int, frames: int = 2) -> np.ndarray:
    """Six saturated flat patches, where a BT.601/709 or range slip moves colours by 10+ levels."""
    colours = np.array([[200, 40, 40], [40, 180, 60], [50, 60, 210], [220, 200, 40], [30, 190, 200], [128, 128, 128]])
    image = np.zeros((height, width, 3), np.uint8)
    for i, colour in enumerate(colours):
        row, col = divmod(i, 3)
        image[row * height // 2 : (row + 1) * height // 2, col * width // 3 : (col + 1) * width // 3] = colour
    return np.repeat(image[None], frames, axis=0), colours


@pytest.mark.parametrize(
    "matrix, windows",
    [
        ("bt601", {"chunk_frames": 4}),
        ("bt709", {"chunk_frames": 4}),
        (None, {"chunk_frames": 4}),  # untagged: PyAV's default conversion, BT.601
        ("bt709", {"chunk_frames": 1, "chunk_overlap": 1, "tile": 64, "tile_overlap": 16}),  # 2x3 tiles, 2 windows
        ("bt709", {"chunk_frames": 4, "colour": "swscale"}),
        ("bt601", {"chunk_frames": 4, "colour": "swscale"}),
    ],
    ids=["bt601", "bt709", "untagged", "bt709-tiles-short-windows", "bt709-swscale", "bt601-swscale"],
)
def test_colours_survive(tmp_path, bilinear_weights, matrix, windows):
    scene, colours = colour_patches(96, 144)
    source = encode_video(tmp_path / "in.mp4", scene, matrix=matrix)
    summary = upscale(source, tmp_path / "out.mp4", Options(bilinear_weights, **windows))
    assert summary.colour == windows.get("colour", "device")
    facts = probe(tmp_path / "out.mp4")
    expected = {"bt709": 1, "bt601": 6, None: 6}[matrix]  # untagged below 720 lines reads as BT.601
    assert (facts["colorspace"], facts["primaries"], facts["transfer"], facts["color_range"]) == (
        expected,
        expected,
        expected,
        1,
    )
    shown = decode_rgb(tmp_path / "out.mp4")[0].astype(int)
    for i, colour in enumerate(colours):
        row, col = divmod(i, 3)
        centre = shown[(2 * row + 1) * 96, (2 * col + 1) * 96]  # patch centres in the 4x output
        assert np.abs(centre - colour).max() <= 3, (i, centre, colour)


def test_odd_output_sizes_are_made_even_for_420(tmp_path, tmp_path_factory):
    checkpoint = random_official_checkpoint(16, 1, False, seed=7)
    weights = tmp_path / "same.pth"
    torch.save(checkpoint, weights)
    source = encode_video(tmp_path / "odd.mkv", moving_scene(3, 45, 37), codec="ffv1", pix_fmt="yuv444p")
    notices = []
    upscale(source, tmp_path / "out.mp4", Options(weights, chunk_frames=3), notice=notices.append)
    facts = probe(tmp_path / "out.mp4")
    assert (facts["width"], facts["height"]) == (38, 46)
    assert any("even" in n for n in notices)
    upscale(source, tmp_path / "out444.mkv", Options(weights, chunk_frames=3, pix_fmt="yuv444p"))
    assert (probe(tmp_path / "out444.mkv")["width"], probe(tmp_path / "out444.mkv")["height"]) == (37, 45)


# ----------------------------------------------------------------------------- windows and tiles
@pytest.fixture(scope="module")
def whole_sequence(tmp_path_factory, weights, vfr_video) -> np.ndarray:
    output = tmp_path_factory.mktemp("whole") / "frames"
    upscale(vfr_video, output, Options(weights, chunk_frames=12, chunk_overlap=0))
    return read_frames(output)


def test_windows_with_full_overlap_equal_the_whole_sequence(tmp_path, weights, vfr_video, whole_sequence):
    upscale(vfr_video, tmp_path / "frames", Options(weights, chunk_frames=6, chunk_overlap=12))
    assert np.array_equal(read_frames(tmp_path / "frames"), whole_sequence)


def test_batched_windows_equal_one_at_a_time(tmp_path, weights, vfr_video):
    """--batch 3: windows of equal length run together (the first and last are shorter and run
    on their own); the frames are those of --batch 1 exactly."""
    one = upscale(vfr_video, tmp_path / "one", Options(weights, chunk_frames=3, chunk_overlap=1, batch=1))
    three = upscale(vfr_video, tmp_path / "three", Options(weights, chunk_frames=3, chunk_overlap=1, batch=3))
    assert (one.batch, three.batch) == (1, 3)
    assert np.array_equal(read_frames(tmp_path / "one"), read_frames(tmp_path / "three"))
    assert three.frames == one.frames == len(read_frames(tmp_path / "one"))


def test_a_run_in_one_process_reads_its_checkpoint_once(tmp_path, weights, monkeypatch):
    """The run loads the network to check it and read its scale and width; its worker, a thread
    of the same process, runs that network rather than loading the file again."""
    reads = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: reads.append(args[0]) or load(*args, **kwargs))
    source = encode_video(tmp_path / "in.mp4", moving_scene(2, 16, 16))
    summary = upscale(source, tmp_path / "out.mp4", Options(weights, chunk_frames=1))
    assert summary.frames == 2 and reads == [weights]


def test_short_overlap_is_close_and_more_overlap_is_closer(tmp_path, weights, vfr_video, whole_sequence):
    scores = []
    for overlap in (0, 2, 4):
        output = tmp_path / f"frames{overlap}"
        upscale(vfr_video, output, Options(weights, chunk_frames=6, chunk_overlap=overlap))
        scores.append(psnr(read_frames(output), whole_sequence))
    assert scores[0] < scores[1] < scores[2] < float("inf")


def test_tiles_come_closer_to_whole_frames_with_overlap(tmp_path, weights):
    """The random test network reaches far (offsets up to 10 px), so tiles never match it
    exactly; blending wider overlaps must still bring them closer. test_windows.py pins the
    blending itself. (Four frames: every 32-pixel tile's flows cost a whole 64x64 frame's,
    SPyNet's smallest input.)"""
    source = encode_video(tmp_path / "four.mkv", moving_scene(4, 48, 64), codec="ffv1", pix_fmt="yuv444p")
    upscale(source, tmp_path / "whole", Options(weights, chunk_frames=4))
    whole = read_frames(tmp_path / "whole")
    scores = []
    for overlap in (0, 8, 15):
        output = tmp_path / f"tiled{overlap}"
        upscale(source, output, Options(weights, chunk_frames=4, tile=32, tile_overlap=overlap))
        scores.append(psnr(read_frames(output), whole))
    assert scores[0] < scores[1] < scores[2]
    upscale(source, tmp_path / "one_tile", Options(weights, chunk_frames=4, tile=64, tile_overlap=8))
    assert np.array_equal(read_frames(tmp_path / "one_tile"), whole)  # a tile that covers all


# ----------------------------------------------------------------------------- folders
def test_frame_folder_in_natural_order(tmp_path, weights):
    folder = tmp_path / "frames"
    folder.mkdir()
    scene = moving_scene(11, 32, 48)
    for i, rgb in enumerate(scene):  # frame2.png must come before frame10.png
        with av.open(str(folder / f"frame{i}.png"), "w", format="image2") as container:
            stream = container.add_stream("png", rate=1)
            stream.width, stream.height, stream.pix_fmt = 48, 32, "rgb24"
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            container.mux(stream.encode())
    upscale(folder, tmp_path / "out", Options(weights, chunk_frames=11))
    reference = tmp_path / "ref"
    source = encode_video(tmp_path / "lossless.mkv", scene, codec="ffv1", pix_fmt="bgr0")
    upscale(source, reference, Options(weights, chunk_frames=11))
    assert np.array_equal(read_frames(tmp_path / "out"), read_frames(reference))
    upscale(folder, tmp_path / "out.mp4", Options(weights, chunk_frames=11))
    facts = probe(tmp_path / "out.mp4")
    assert len(facts["times"]) == 11
    assert (facts["colorspace"], facts["color_range"]) == (1, 1)  # BT.709, limited: what players expect


# ----------------------------------------------------------------------------- resume
def test_resume_refuses_other_settings(tmp_path, weights):
    source = encode_video(tmp_path / "in.mp4", moving_scene(4, 32, 48))
    partial = tmp_path / ".out.mp4.vsrpp-partial"
    partial.mkdir()
    (partial / "run.json").write_text(json.dumps({"fingerprint": {"chunk_frames": 99}, "plan": {}}))
    result = vsrpp("upscale", str(source), str(tmp_path / "out.mp4"), "--weights", str(weights), "--resume")
    assert result.returncode == 1
    assert "different" in result.stderr and "chunk_frames" in result.stderr


# ----------------------------------------------------------------------------- bad input
def assert_clean_failure(result, message: str, folder: Path, before: set, status: int = 1) -> None:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr, result.stderr
    assert set(folder.iterdir()) == before  # nothing written, nothing left behind


def test_bad_inputs(tmp_path, weights):
    good = encode_video(tmp_path / "good.mp4", moving_scene(3, 32, 48))
    text = tmp_path / "notes.mp4"
    text.write_text("hello")
    audio_only = tmp_path / "audio.m4a"
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 48000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    empty = tmp_path / "empty"
    empty.mkdir()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name, size in (("a.png", (48, 64)), ("b.png", (50, 64))):
        with av.open(str(mixed / name), "w", format="image2") as container:
            stream = container.add_stream("png", rate=1)
            stream.height, stream.width = size
            stream.pix_fmt = "rgb24"
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((*size, 3), np.uint8), format="rgb24")))
            container.mux(stream.encode())
    corrupt_weights = tmp_path / "corrupt.pth"
    corrupt_weights.write_bytes(weights.read_bytes()[:1000])
    other_weights = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other_weights)
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"precious")

    w = ["--weights", str(weights)]
    cases = [
        ([str(tmp_path / "absent.mp4"), str(tmp_path / "o.mp4"), *w], "no such file"),
        ([str(text), str(tmp_path / "o.mp4"), *w], "not a video FFmpeg can read"),
        ([str(audio_only), str(tmp_path / "o.mp4"), *w], "has no video stream"),
        ([str(empty), str(tmp_path / "o.mp4"), *w], "no PNG or JPEG frames"),
        ([str(mixed), str(tmp_path / "o.mp4"), *w], "must be the same size"),
        ([str(good), str(tmp_path / "o.avi"), *w], "unknown output extension '.avi'", 2),
        ([str(good), str(existing), *w], "already exists; add --overwrite"),
        ([str(good), str(tmp_path / "o.mp4"), "--weights", str(tmp_path / "none.pth")], "none.pth: no such file"),
        ([str(good), str(tmp_path / "o.mp4"), "--weights", str(corrupt_weights)], "not a readable torch checkpoint"),
        ([str(good), str(tmp_path / "o.mp4"), "--weights", str(other_weights)], "not a BasicVSR++ state_dict"),
        ([str(good), str(tmp_path / "o.mp4"), *w, "--codec", "nosuch"], "--codec nosuch: not an encoder", 2),
        ([str(good), str(tmp_path / "o.mp4"), *w, "--pix-fmt", "pal8"], "--pix-fmt pal8: libx264 cannot write", 2),
        ([str(good), str(tmp_path / "o.mp4"), *w, "--colour", "rgb"], "'rgb' is not one of 'device', 'swscale'", 2),
    ]
    for args, message, *status in cases:
        before = set(tmp_path.iterdir())
        assert_clean_failure(vsrpp("upscale", *args), message, tmp_path, before, *status)
    assert existing.read_bytes() == b"precious"


def test_truncated_video_is_decoded_as_far_as_it_goes(tmp_path, weights):
    source = tmp_path / "cut.mp4"
    with av.open(str(source), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for rgb in moving_scene(20, 32, 48):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    source.write_bytes(source.read_bytes()[: int(source.stat().st_size * 0.6)])
    result = vsrpp("upscale", str(source), str(tmp_path / "out.mp4"), "--weights", str(weights), "--json", *NO_NETWORK)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert 0 < summary["frames"] < 20
    assert summary["lost"] and "missing" in summary["lost"][-1]
    assert "lost:" in result.stderr
    assert len(probe(tmp_path / "out.mp4")["times"]) == summary["frames"]


def test_a_truncated_matroska_file_says_what_it_lost(tmp_path, weights):
    """Matroska states no frame count, only a duration: 40 frames cut to the first 17 used to end
    with exit 0 and nothing lost."""
    source = encode_video(tmp_path / "full.mkv", moving_scene(40, 32, 32), container_format="matroska")
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(source.read_bytes()[: int(source.stat().st_size * 0.6)])
    result = vsrpp("upscale", str(cut), str(tmp_path / "out.mp4"), "--weights", str(weights), "--json", *NO_NETWORK)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["lost"] == [
        f"the file ends early: its frames stop at {summary['frames'] / 25:.3f} s of the 1.600 s it states "
        f"(about {40 - summary['frames']} frames missing)"
    ]
    whole = open_source(source)
    assert sum(1 for _ in whole.frames()) == 40 and whole.report.lost == []  # the whole file: nothing said


def test_a_corrupt_packet_in_the_middle_is_said_once(tmp_path, weights):
    """Packet 10 of 20 overwritten: one line names it; it is not also counted as the file
    ending early (it used to be both), and every other frame comes out."""
    source = encode_video(tmp_path / "in.mp4", moving_scene(20, 32, 48))
    with av.open(str(source)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
        position, size, when = packets[10].pos, packets[10].size, float(packets[10].pts * packets[10].time_base)
    data = bytearray(source.read_bytes())
    data[position : position + size] = b"\xff" * size
    source.write_bytes(bytes(data))
    result = vsrpp("upscale", str(source), str(tmp_path / "out.mp4"), "--weights", str(weights), "--json", *NO_NETWORK)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["lost"] == [f"the packet at {when:.3f}s could not be decoded"]
    assert summary["frames"] == 19 == len(probe(tmp_path / "out.mp4")["times"])


# ----------------------------------------------------------------------------- batches
def test_several_inputs_into_a_folder(tmp_path, weights):
    videos = tmp_path / "videos"
    videos.mkdir()
    encode_video(videos / "a.mp4", moving_scene(3, 32, 48))
    encode_video(videos / "b.mkv", moving_scene(4, 32, 48, seed=1))
    extra = encode_video(tmp_path / "c.mov", moving_scene(2, 32, 48, seed=2))
    broken = tmp_path / "d.mp4"
    broken.write_text("not a video")
    out = tmp_path / "out"
    result = vsrpp("upscale", str(videos), str(extra), str(broken), str(out), "--weights", str(weights), "--json",
                   *NO_NETWORK)  # fmt: skip
    assert result.returncode == 1  # one file failed; the others are done
    assert "d.mp4" in result.stderr and "not a video FFmpeg can read" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mkv", "c.mov"]
    assert [len(probe(out / name)["times"]) for name in ("a.mp4", "b.mkv", "c.mov")] == [3, 4, 2]
    summaries = json.loads(result.stdout)
    assert [s and s["frames"] for s in summaries] == [3, 4, 2, None]


def test_several_inputs_need_a_folder(tmp_path, weights):
    a = encode_video(tmp_path / "a.mp4", moving_scene(2, 32, 48))
    result = vsrpp("upscale", str(a), str(a), str(tmp_path / "out.mp4"), "--weights", str(weights))
    assert result.returncode == 2 and "need an output folder" in result.stderr


# ----------------------------------------------------------------------------- precision
def test_fp16_overflow_is_recomputed_in_fp32(tmp_path):
    """A red channel pushed past fp16's range (65504) makes inf in fp16: that window must be
    recomputed in fp32 and match an fp32 run exactly, never a black or broken frame."""
    checkpoint = random_official_checkpoint(8, 1, True, seed=5)
    checkpoint["state_dict"]["generator.conv_last.bias"][0] = 1e5
    weights = tmp_path / "overflow.pth"
    torch.save(checkpoint, weights)
    # One frame: PyTorch has no fast fp16 convolution on the CPU (14 s a frame here).
    source = encode_video(tmp_path / "one.mp4", moving_scene(1, 32, 48))
    notices = []
    options = Options(weights, precision="fp16", chunk_frames=1, chunk_overlap=0)
    summary = upscale(source, tmp_path / "fp16", options, notice=notices.append)
    assert summary.fp32_fallbacks == 1 and any("recomputed in fp32" in n for n in notices)
    said = any(n.startswith("fp16 on this CPU is 40-90x slower than fp32") for n in notices)
    assert said is slow_on_this_cpu(torch.float16)  # (tests/test_threads.py checks the rule against PyTorch)
    upscale(source, tmp_path / "fp32", Options(weights, precision="fp32", chunk_frames=1, chunk_overlap=0))
    assert np.array_equal(read_frames(tmp_path / "fp16"), read_frames(tmp_path / "fp32"))


def test_rotation_is_carried(tmp_path, weights):
    """A phone video stores its frames sideways with a display matrix; the output must too."""
    import struct

    source = encode_video(tmp_path / "in.mp4", moving_scene(3, 32, 48))
    data = bytearray(source.read_bytes())
    matrix_at = data.index(b"tkhd") + 4 + 4 + 4 * 5 + 8 + 8  # ISO/IEC 14496-12 TrackHeaderBox, version 0
    data[matrix_at : matrix_at + 36] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)  # 90 degrees
    source.write_bytes(bytes(data))
    with av.open(str(source)) as container:
        assert next(container.decode(video=0)).rotation == -90
    upscale(source, tmp_path / "out.mp4", Options(weights, chunk_frames=3))
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert next(container.decode(video=0)).rotation == -90


def test_overwrite_replaces_a_file_or_a_folder(tmp_path, weights):
    source = encode_video(tmp_path / "in.mp4", moving_scene(2, 32, 48))
    existing = encode_video(tmp_path / "out.mp4", moving_scene(5, 32, 48))  # an older output
    upscale(source, existing, Options(weights, overwrite=True))
    assert len(probe(existing)["times"]) == 2
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "00000009.png").write_bytes(b"a frame of an older run")
    upscale(source, folder, Options(weights, overwrite=True))
    assert sorted(p.name for p in folder.iterdir()) == ["00000000.png", "00000001.png"]


# ----------------------------------------------------------------------------- CUDA
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@needs_cuda
def test_cuda_run_matches_the_cpu_run(tmp_path, weights, vfr_video):
    """The default path on a GPU (colour conversion and quantisation there, fp32 to compare):
    the same frames as on the CPU but for float rounding, and the same timestamps and audio."""
    options = {"chunk_frames": 6, "precision": "fp32"}
    upscale(vfr_video, tmp_path / "cpu.mkv", Options(weights, device="cpu", **options))
    summary = upscale(vfr_video, tmp_path / "cuda.mkv", Options(weights, device="cuda", **options))
    assert summary.device.startswith("cuda") and summary.colour == "device"
    difference = np.abs(read_frames(tmp_path / "cuda.mkv").astype(int) - read_frames(tmp_path / "cpu.mkv"))
    assert difference.mean() < 0.05 and difference.max() <= 2
    assert probe(tmp_path / "cuda.mkv") == probe(tmp_path / "cpu.mkv")


@pytest.mark.cuda
@needs_cuda
def test_out_of_gpu_memory_retries_with_smaller_tiles(tmp_path, weights):
    source = encode_video(tmp_path / "in.mp4", moving_scene(4, 256, 384))
    options = Options(weights, device="cuda", chunk_frames=4, chunk_overlap=0)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    upscale(source, tmp_path / "whole.mp4", options)
    peak = torch.cuda.max_memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    notices: list[str] = []
    torch.cuda.set_per_process_memory_fraction(0.6 * peak / total)  # whole frames no longer fit
    try:
        torch.cuda.empty_cache()
        summary = upscale(source, tmp_path / "tiled.mp4", options, notice=notices.append)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert summary.frames == 4 and 0 < summary.tile < 384
    assert any("out of GPU memory: retrying with --tile" in n for n in notices), notices
    assert len(probe(tmp_path / "tiled.mp4")["times"]) == 4


@pytest.mark.cuda
@needs_cuda
def test_windows_are_sized_to_free_gpu_memory(tmp_path, weights, vfr_video):
    summary = upscale(vfr_video, tmp_path / "out.mkv", Options(weights, device="cuda"))
    assert 8 <= summary.chunk_frames <= 100 and summary.frames == len(VFR_PTS)
