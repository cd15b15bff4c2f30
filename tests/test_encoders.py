"""What the encoders are told (video/encoders.py): libx264's output a function of its input alone,
whatever the heap held; x265 and SVT-AV1 quiet on the terminal."""

from __future__ import annotations

import ctypes
import hashlib
from fractions import Fraction

import numpy as np
import pytest

from vsrpp_cli.video.encode import EncoderSettings, VideoEncoder
from vsrpp_cli.video.encoders import AVX512_FLAGS, avx512_in_cpuinfo
from vsrpp_cli.video.info import VideoInfo

M_PERTURB = -6  # glibc's malloc.h: fill each new block with ~byte and each freed one with byte


def glibc():
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallopt"):
        pytest.skip("glibc's mallopt is what fills the heap here")
    return libc


def encoded(frames: np.ndarray, codec: str | None = None) -> str:
    """The packets of one segment's encoder, as upscale makes it for an MP4."""
    height, width = frames.shape[1:3]
    info = VideoInfo(width, height, Fraction(1, 25), Fraction(25), len(frames), 8, "bt709", False)
    encoder = VideoEncoder(EncoderSettings("mp4", codec), info, (width, height))
    packets = [p for pts, frame in enumerate(frames) for p in encoder.encode(frame, pts)] + encoder.flush()
    encoder.close()
    return hashlib.sha256(b"".join(bytes(p) for p in packets)).hexdigest()


def test_same_bytes_whatever_the_heap_held():
    """192 pixels are 12 macroblocks, not a multiple of 8: x264's AVX-512 macroblock tree reads
    past each row there. Without video/encoders.py's flags, 5 of 8 noise seeds gave other packets
    under a fill of 42 or 7 than under none, on an AVX-512 CPU; a CPU without AVX-512 holds
    this anyway."""
    libc = glibc()
    for seed in (1, 2, 4):
        frames = np.random.default_rng(seed).integers(0, 256, (4, 128, 192, 3), dtype=np.uint8)
        outputs = set()
        try:
            for fill in (0, 42, 7):
                libc.mallopt(M_PERTURB, fill)
                outputs.add(encoded(frames))
        finally:
            libc.mallopt(M_PERTURB, 0)
        assert len(outputs) == 1, f"seed {seed}: {len(outputs)} different outputs"


def test_avx512_is_what_x264_asks_for():
    """x264_cpu_detect's test (CPUID leaf 7: F, DQ, CD, BW and VL), read from /proc/cpuinfo."""
    skylake_x = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 " + " ".join(sorted(AVX512_FLAGS)) + " avx512vnni\n"
    assert avx512_in_cpuinfo(skylake_x)
    knights_landing = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512cd avx512er avx512pf\n"
    assert not avx512_in_cpuinfo(knights_landing)  # no BW, DQ or VL: x264 stays at AVX2 there
    assert not avx512_in_cpuinfo("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n")
    assert not avx512_in_cpuinfo("processor\t: 0\nFeatures\t: fp asimd\n")  # an ARM machine


@pytest.mark.parametrize("codec", ["libx265", "libsvtav1"])
def test_encoders_that_print_for_themselves_are_quiet(capfd, codec):
    """They write to file descriptor 2 themselves, past Python and FFmpeg's log: a segment's
    encoder printed 20-30 lines of banner and settings before."""
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    encoded(frames, codec)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("full_range", [False, True])
def test_mjpeg_keeps_the_inputs_range(full_range):
    """FFmpeg's MJPEG encoder refuses limited-range YUV by default (`--codec mjpeg` once failed on
    every ordinary video with "mjpeg refused its default settings"); the range is kept and tagged,
    and FFmpeg decodes the frames back within JPEG's loss."""
    import av

    frames = np.stack([np.full((48, 64, 3), value, np.uint8) for value in (40, 120, 200)])
    info = VideoInfo(64, 48, Fraction(1, 25), Fraction(25), 3, 8, "bt709", full_range)
    encoder = VideoEncoder(EncoderSettings("matroska", "mjpeg"), info, (64, 48))
    packets = [p for pts, frame in enumerate(frames) for p in encoder.encode(frame, pts)] + encoder.flush()
    encoder.close()
    decoder = av.CodecContext.create("mjpeg", "r")
    decoded = [f for p in packets for f in decoder.decode(av.Packet(bytes(p)))] + decoder.decode(None)
    assert len(decoded) == 3
    for frame, want in zip(decoded, frames, strict=True):
        assert np.abs(frame.to_ndarray(format="rgb24").astype(int) - want).max() <= 3
