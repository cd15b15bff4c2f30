"""YUV <-> RGB on the compute device (colour.py): the standards' values, chroma siting as
FFmpeg's decoders report it, and real encodes read back by FFmpeg."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from media import encode_video, moving_scene

from vsrpp_cli.run.folder import Spool
from vsrpp_cli.video.colour import (
    Planes,
    YuvTarget,
    chroma_cosited,
    converts_here,
    planar_format,
    read_planes,
    rgb_to_yuv,
    to_video_frame,
    yuv_to_rgb,
)
from vsrpp_cli.video.encode import EncoderSettings, VideoEncoder
from vsrpp_cli.video.info import VideoInfo
from vsrpp_cli.video.inputs import open_source
from vsrpp_cli.video.mux import Muxer, StoredPacket

CPU = torch.device("cpu")
RED, GREEN = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)


def solid(colour: tuple[float, float, float], size: int = 4) -> torch.Tensor:
    return torch.tensor(colour).view(1, 3, 1, 1).expand(1, 3, size, size).contiguous()


# Code values worked out by hand from the standards' Kr, Kb and the range definitions, e.g.
# BT.709 limited red: Y = 16 + 219 * 0.2126 = 62.6, Cb = 128 - 224 * 0.2126 / 1.8556 = 102.3.
KNOWN = [
    ("bt709", False, "yuv444p", RED, (63, 102, 240)),
    ("bt709", False, "yuv444p", GREEN, (173, 42, 26)),
    ("bt709", False, "yuv444p", (1.0, 1.0, 1.0), (235, 128, 128)),
    ("bt601", False, "yuv444p", RED, (81, 90, 240)),
    ("bt601", True, "yuv444p", RED, (76, 85, 255)),  # JFIF: Cr 255.5 clipped
    ("bt709", False, "yuv444p10le", RED, (250, 409, 960)),
    ("bt2020", False, "yuv444p10le", RED, (294, 387, 960)),
    ("bt709", True, "yuv444p10le", (0.0, 0.0, 0.0), (0, 512, 512)),
]


@pytest.mark.parametrize("matrix, full_range, pix_fmt, rgb, codes", KNOWN)
def test_standard_colours_have_their_code_values(matrix, full_range, pix_fmt, rgb, codes):
    planes = rgb_to_yuv(solid(rgb), YuvTarget(pix_fmt, 4, 4, matrix, full_range, cosited=False))[0]
    assert [int(p[0, 0]) for p in (planes.y, planes.cb, planes.cr)] == list(codes)
    assert all(np.all(p == p[0, 0]) for p in (planes.y, planes.cb, planes.cr))
    back = yuv_to_rgb(planes, CPU)[:, 0, 0]
    peak = 2 ** av.VideoFormat(pix_fmt).components[0].bits - 1
    # Within what the code values' rounding allows (a little more where Cr was clipped).
    assert torch.allclose(back, torch.tensor(rgb), atol=2.5 / (peak * 0.85)), back


def test_ten_bit_planes_survive_the_trip_to_the_device():
    planes = Planes(
        "yuv420p10le",
        "bt709",
        False,
        True,
        np.full((4, 4), 940, np.uint16),  # white
        np.full((2, 2), 512, np.uint16),
        np.full((2, 2), 512, np.uint16),
    )
    assert torch.allclose(yuv_to_rgb(planes, CPU), torch.ones(3, 4, 4))
    assert np.array_equal(
        rgb_to_yuv(torch.ones(1, 3, 4, 4), YuvTarget("yuv420p10le", 4, 4, "bt709", False, True))[0].y, planes.y
    )


def stripes(height: int = 16, width: int = 64, period: float = 12.0) -> torch.Tensor:
    """(1, 3, h, w): colour that changes fast along x but smoothly, so any chroma shift shows."""
    x = torch.arange(width, dtype=torch.float32)
    wave = 0.5 + 0.3 * torch.sin(2 * torch.pi * x / period)
    return torch.stack([wave, 1 - wave, 0.5 + 0 * wave]).view(1, 3, 1, width).expand(1, 3, height, width)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p"])
def test_chroma_siting_round_trips_and_a_wrong_one_shows(pix_fmt):
    rgb = stripes()
    inner = (slice(None), slice(4, -4))  # away from the edges, where samples are repeated
    for cosited in (True, False):
        target = YuvTarget(pix_fmt, 64, 16, "bt709", False, cosited)
        planes = rgb_to_yuv(rgb, target)[0]
        right = (yuv_to_rgb(planes, CPU) - rgb[0]).abs()[:, inner[0], inner[1]] * 255
        wrong = (yuv_to_rgb(dataclasses.replace(planes, cosited=not cosited), CPU) - rgb[0]).abs()
        wrong = wrong[:, inner[0], inner[1]] * 255
        # Measured: right 1.0-1.4 levels on average (4.6 at most), wrong 10.6.
        assert right.mean() < 2 and right.max() < 6, (cosited, right.mean(), right.max())
        assert wrong.mean() > 6, (cosited, wrong.mean())


def test_odd_sizes_are_padded_by_repeating_the_edge():
    rgb = torch.rand(2, 3, 5, 7)
    planes = rgb_to_yuv(rgb, YuvTarget("yuv420p", 8, 6, "bt601", False, True))
    assert [p.y.shape for p in planes] == [(6, 8), (6, 8)]
    assert planes[0].cb.shape == (3, 4)
    assert np.array_equal(planes[0].y[:, 7], planes[0].y[:, 6]) and np.array_equal(planes[0].y[5], planes[0].y[4])


def test_formats_handled_here():
    for name in ("yuv420p", "yuvj420p", "yuv422p10le", "yuv444p12le", "yuv420p16le", "yuv440p", "nv12", "p010le"):
        assert converts_here(name), name
    for name in ("nv21", "rgb24", "gbrp", "gray", "yuv411p", "yuva420p", "yuv420p10be", "pal8", None):
        assert not converts_here(name), name


# FFmpeg's decoders report where chroma sits, and swscale follows that: reading each codec's
# video both ways must agree, and reading it with the other siting must not.
@pytest.mark.parametrize(
    "codec, pix_fmt, extension, cosited",
    [
        ("libx264", "yuv420p", "mkv", True),
        ("libx264", "yuv422p", "mkv", True),
        ("mpeg2video", "yuv420p", "mkv", True),
        ("libvpx-vp9", "yuv420p", "webm", False),
        ("ffv1", "yuv420p", "mkv", False),
        ("prores_ks", "yuv422p10le", "mov", False),
    ],
)
def test_decoding_sites_chroma_where_ffmpeg_reports_it(tmp_path, codec, pix_fmt, extension, cosited):
    scene = moving_scene(3, 48, 64)
    if pix_fmt.endswith("10le"):
        scene = scene.astype(np.uint16) * 257
    source = encode_video(tmp_path / f"in.{extension}", scene, codec=codec, pix_fmt=pix_fmt)
    by_swscale = np.stack([f.image for f in open_source(source).frames()]).astype(float)
    by_swscale /= 257 if by_swscale.max() > 255 else 1
    frames = list(open_source(source).frames(keep_yuv=True))
    assert all(isinstance(f.image, Planes) and f.image.cosited == cosited for f in frames)

    def read(as_cosited: bool) -> np.ndarray:
        planes = [dataclasses.replace(f.image, cosited=as_cosited) for f in frames]
        return np.stack([yuv_to_rgb(p, CPU).permute(1, 2, 0).numpy() * 255 for p in planes])

    assert np.abs(read(cosited) - by_swscale).mean() < 1.0
    assert np.abs(read(not cosited) - by_swscale).mean() > 2.0


@pytest.mark.parametrize("codec", ["libx264", "ffv1"])
def test_encoded_output_is_sited_as_its_codec_expects(tmp_path, codec):
    """Planes made for a lossless encode and read back by FFmpeg, which sites chroma by the
    codec: ours come back as they went in, the other siting would not."""
    scene = stripes(48, 64).expand(3, 3, 48, 64)
    info = VideoInfo(64, 48, Fraction(1, 25), Fraction(25), 3, 8, "bt709", False)

    def error_after_encoding(flip: bool) -> float:
        path = tmp_path / f"out{flip}.mkv"
        crf = 0 if codec == "libx264" else None  # x264 at crf 0 is lossless
        settings = EncoderSettings("matroska", codec, crf=crf, pix_fmt="yuv420p")
        encoder = VideoEncoder(settings, info, (64, 48))
        target = encoder.planes_target
        assert target is not None and target.cosited == chroma_cosited(codec)
        packets = []
        for pts, planes in enumerate(rgb_to_yuv(scene, dataclasses.replace(target, cosited=target.cosited ^ flip))):
            packets += encoder.encode(planes, pts)
        packets += encoder.flush()
        stored = [StoredPacket(p.pts, p.duration or 0, p.is_keyframe, p.size) for p in packets]
        data = [bytes(p) for p in packets]
        muxer = Muxer(path, settings, info, (64, 48), None)
        muxer.mux([(stored, lambda: iter(data))])
        muxer.close()
        source = open_source(path)  # read through swscale, which sites chroma by the codec
        assert (source.info.matrix, source.info.full_range) == ("bt709", False)
        shown = [frame.image for frame in source.frames()]
        difference = torch.from_numpy(np.stack(shown)).permute(0, 3, 1, 2) / 255 - scene
        return float(difference[..., 4:-4].abs().mean() * 255)

    right, wrong = error_after_encoding(flip=False), error_after_encoding(flip=True)
    assert right < 2 and wrong > 3 * right, (right, wrong)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p10le", "yuv444p"])
def test_cuda_converts_as_the_cpu_does(pix_fmt):
    rgb = torch.rand(3, 3, 30, 46)
    target = YuvTarget(pix_fmt, 46, 30, "bt709", False, True)
    on_cpu, on_cuda = rgb_to_yuv(rgb, target), rgb_to_yuv(rgb.cuda(), target)
    for a, b in zip(on_cpu, on_cuda, strict=True):
        for plane in ("y", "cb", "cr"):  # float rounding may move a code value by one
            assert np.abs(getattr(a, plane).astype(int) - getattr(b, plane)).max() <= 1
        assert torch.allclose(yuv_to_rgb(a, CPU), yuv_to_rgb(a, torch.device("cuda")).cpu(), atol=1e-5)


@pytest.mark.parametrize("semi_planar", ["nv12", "p010le", "p210le"])
def test_semi_planar_frames_hold_the_same_samples_as_planar_ones(tmp_path, semi_planar):
    """NVENC takes NV12/P010: FFmpeg's unpacking of ours, and our reading of FFmpeg's packing,
    give the planar samples, and such windows survive the resume store unchanged. (48x64: on
    frames a few pixels tall swscale itself now and then returns a neutral chroma row.)"""
    rgb = torch.rand(3, 3, 48, 64)
    planar = planar_format(semi_planar)
    target = YuvTarget(semi_planar, 64, 48, "bt709", False, True)
    packed = rgb_to_yuv(rgb, target)
    expected = rgb_to_yuv(rgb, dataclasses.replace(target, format=planar))
    store = Spool(tmp_path)
    store.save_window(0, packed)
    stored = store.load_window(0, target)
    for ours, want, kept in zip(packed, expected, stored, strict=True):
        unpacked_by_ffmpeg = read_planes(to_video_frame(ours).reformat(format=planar), "bt709", False, True)
        packed_by_ffmpeg = read_planes(to_video_frame(want).reformat(format=semi_planar), "bt709", False, True)
        for plane in ("y", "cb", "cr"):
            assert np.array_equal(getattr(unpacked_by_ffmpeg, plane), getattr(want, plane))
            assert np.array_equal(getattr(packed_by_ffmpeg, plane), getattr(want, plane))
            assert np.array_equal(getattr(kept, plane), getattr(ours, plane))
        assert kept.format == semi_planar


def test_untagged_video_reads_as_bt709_from_720_lines_up(tmp_path):
    """No matrix tag: BT.601 below 720 lines, BT.709 from 720 up (what players do)."""
    for height, matrix in ((576, "bt601"), (720, "bt709")):
        frames = np.full((1, height, 64, 3), (200, 40, 40), np.uint8)
        source = encode_video(tmp_path / f"untagged{height}.mkv", frames, codec="ffv1", pix_fmt="yuv444p")
        assert open_source(source).info.matrix == matrix
        yuv = next(open_source(source).frames(keep_yuv=True)).image
        assert yuv.matrix == matrix
        with av.open(str(source)) as container:  # PyAV's untagged conversion is BT.601's
            raw = next(container.decode(video=0)).to_ndarray(format="yuv444p")[:, 0, 0].astype(float)
        kr, kb = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}[matrix]
        y, cb, cr = (raw[0] - 16) / 219, (raw[1] - 128) / 224, (raw[2] - 128) / 224
        expected = [y + (2 - 2 * kr) * cr, 0, y + (2 - 2 * kb) * cb]
        expected[1] = (y - kr * expected[0] - kb * expected[2]) / (1 - kr - kb)
        shown = yuv_to_rgb(yuv, CPU)[:, 0, 0].numpy()
        assert np.allclose(shown, np.clip(expected, 0, 1), atol=1e-5)
