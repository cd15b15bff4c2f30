"""What we ask of the encoders beyond the user's settings, and why: the same frames must give
the same bytes whatever the process's heap held (libx264), and the terminal holds vsrpp's
progress and its one-line messages, not an encoder's banner (libx265, SVT-AV1).

x264's AVX-512 `mbtree_propagate_list` (common/x86/mc-a2.asm) walks each row of the
lookahead's half-size macroblocks 8 at a time and has no tail: where the frame is not a multiple
of 8 macroblocks wide (128 pixels), its last pass reads past the row into memory nobody wrote,
and what it finds there moves the quantisers the macroblock tree picks. The AVX2 and older paths
stop at the row's end (the C wrapper PROPAGATE_LIST in common/mc.h). Measured here (PyAV 18.1,
x264 core 165, an AVX-512 CPU): 4 frames of noise at 192x128 gave different packets for 5 of 8
seeds under glibc's malloc fills 0 and 42; with x264 held to AVX2, all the same, and at widths
that are a multiple of 128 the bytes do not change at all (docs/REFERENCE.md, "x264").

So on a CPU where x264 would take its AVX-512 code, it gets the flags its own detection
(x264_cpu_detect in common/cpu.c) sets on such a CPU, less AVX-512. Its speed is the same
(1080p, 40 frames: within the noise of three runs each).

FFmpeg's MJPEG encoder refuses limited-range YUV unless told to be unofficial ("Non full-range
YUV is non-standard, set strict_std_compliance to at most unofficial", libavcodec/mjpegenc.c): JPEG
is full range by its standard. vsrpp keeps the input's range (its frames stay as they were, the
stream is tagged limited), as `ffmpeg -strict unofficial` does, and FFmpeg reads it back so.

x265 and SVT-AV1 print their banner and settings to standard error themselves, not through
FFmpeg's log: 90 lines for a 12-frame run in 3 segments with libx265 (each segment's encoder
and the settings check before the run). Both are held to their errors: x265 by its `log-level`
parameter, SVT-AV1 by the SVT_LOG variable it reads from the environment when an encoder starts
(1: fatal and error; SVT-AV1's svt_log.h). A SVT_LOG the user set is kept.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

X264 = ("libx264", "libx264rgb")
# x264's names (common/cpu.c x264_cpu_names) are cumulative: AVX2 brings SSE..SSE4.2, AVX, FMA3,
# LZCNT, BMI1 and BMI2; SSE2Fast is what x264_cpu_detect adds for any CPU with SSSE3.
WITHOUT_AVX512 = "asm=AVX2,SSE2Fast"
# What x264_cpu_detect asks before it takes its AVX-512 code (CPUID leaf 7 EBX 0xD0030000).
AVX512_FLAGS = frozenset({"avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"})


def encoder_options(codec: str, full_range: bool = False) -> dict[str, str]:
    """Options for the codec's encoder: its output a function of its input, its terminal quiet,
    the input's range kept."""
    if codec == "mjpeg" and not full_range:
        return {"strict": "unofficial"}
    if codec in X264 and cpu_has_avx512():
        return {"x264-params": WITHOUT_AVX512}
    if codec == "libx265":
        return {"x265-params": "log-level=error"}
    if codec == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # workers started later inherit it
    return {}


@functools.cache
def cpu_has_avx512() -> bool:
    """Whether x264 would take its AVX-512 code on this CPU."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        # Where the OS has not enabled the AVX-512 registers x264 stays below AVX-512 on its own,
        # and the flags we give it are the ones it would take: no harm either way.
        return avx512_in_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:  # not Linux: torch's own detection (cpuinfo) asks the CPU and the OS the same
        import torch

        return torch.backends.cpu.get_cpu_capability() == "AVX512"


def avx512_in_cpuinfo(text: str) -> bool:
    """Whether /proc/cpuinfo's first `flags` line holds every flag x264's AVX-512 test asks for."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return set(value.split()) >= AVX512_FLAGS
    return False
