"""Colour conversion on the compute device: planar YUV frames to RGB tensors and back.

YUV <-> RGB runs where the network runs (`--colour device`, the default), so on a GPU the CPU
never converts the 16x larger output frames: decoding hands over the planes as decoded and
encoding receives planes ready for the encoder. Planar YUV and the semi-planar NV12/P010
family (NVENC's) are handled here; RGB, gray and paletted formats still go through swscale.

The arithmetic follows the standards: Y = Kr R + Kg G + Kb B, Cb = (B - Y) / (2 - 2 Kb),
Cr = (R - Y) / (2 - 2 Kr), with Kr, Kb from ITU-R BT.601-7, BT.709-6, BT.2020-2, SMPTE 240M and
FCC (47 CFR 73.682); limited range puts Y on 16..235 and Cb/Cr on 16..240 (times 2^(bits-8)),
full range on 0..2^bits-1 around 2^(bits-1).

Where subsampled chroma sits matters at 4x: half a chroma sample off in the input is two pixels
off in the output. PyAV does not expose the location a stream signals, so this follows what
FFmpeg's decoders report when nothing is signalled (and what swscale then uses, checked against
it for each codec here): chroma on the even luma columns ("left", H.264 Annex E
chroma_sample_loc_type 0) for H.264, HEVC, VVC, MPEG-2 and MPEG-4 Part 2; centred between the
luma samples it covers for everything else (ProRes, VP9, AV1, MJPEG, FFV1, ...). 4:2:0 rows are
always centred. The output is sited by the same rule for its encoder's codec, so the players'
assumption holds. Resampling uses the Catmull-Rom cubic: four taps up, eight down.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import av
import numpy as np
import torch
from torch import Tensor

# (Kr, Kb) of each matrix.
LUMA_WEIGHTS = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "bt2020": (0.2627, 0.0593),
    "smpte240m": (0.212, 0.087),
    "fcc": (0.30, 0.11),
}
# AVColorSpace values (libavutil/pixfmt.h) to matrix names, and back.
MATRIX_OF_TAG = {1: "bt709", 4: "fcc", 5: "bt601", 6: "bt601", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}
TAG_OF_MATRIX = {"bt709": 1, "fcc": 4, "bt601": 6, "smpte240m": 7, "bt2020": 9}
LEFT_SITED = {"h264", "hevc", "vvc", "mpeg2video", "mpeg4"}  # codecs, by FFmpeg's canonical names
# Semi-planar formats (Cb and Cr interleaved in one plane; what NVENC takes): the planar format
# with the same samples, and how far each sample is shifted up in its 16 bits (P010: 6).
SEMI_PLANAR = {
    "nv12": ("yuv420p", 0),
    "nv16": ("yuv422p", 0),
    "p010le": ("yuv420p10le", 6),
    "p012le": ("yuv420p12le", 4),
    "p016le": ("yuv420p16le", 0),
    "p210le": ("yuv422p10le", 6),
    "p216le": ("yuv422p16le", 0),
}


@dataclass
class Planes:
    """One frame's samples as the codec stores them: Y (h, w), Cb and Cr (subsampled), uint8 for
    8-bit formats and uint16 for 9 to 16 bits, with the matrix and range they are coded in."""

    format: str  # a planar or semi-planar YUV pixel format, e.g. "yuv420p", "yuv422p10le", "p010le"
    matrix: str
    full_range: bool
    cosited: bool  # chroma sample j on luma column 2j (else centred between 2j and 2j + 1)
    y: np.ndarray
    cb: np.ndarray
    cr: np.ndarray

    @property
    def height(self) -> int:
        return self.y.shape[0]

    @property
    def width(self) -> int:
        return self.y.shape[1]


@dataclass(frozen=True)
class YuvTarget:
    """What an encoder wants: the pixel format, the (even where needed) size, matrix and range."""

    format: str
    width: int
    height: int
    matrix: str
    full_range: bool
    cosited: bool


def converts_here(pix_fmt: str | None) -> bool:
    """Whether this module handles the format: planar YUV (3 planes, 8-16 bits little-endian,
    chroma full size or halved) or one of the semi-planar formats above."""
    if not pix_fmt:
        return False
    if pix_fmt in SEMI_PLANAR:
        return True
    try:
        layout = av.VideoFormat(pix_fmt)
    except ValueError:
        return False
    components = layout.components
    return (
        not layout.is_rgb
        and not layout.has_palette
        and not layout.is_big_endian
        and len(components) == 3
        and [c.plane for c in components] == [0, 1, 2]
        and all(8 <= c.bits <= 16 for c in components)
        and layout.chroma_width(4) in (2, 4)
        and layout.chroma_height(4) in (2, 4)
    )


@functools.cache
def chroma_cosited(codec: str) -> bool:
    """Whether the codec's convention puts subsampled chroma on the even luma columns (see top)."""
    for mode in ("r", "w"):  # a decoder's or encoder's name to the codec's: libdav1d -> av1
        with contextlib.suppress(av.error.FFmpegError, ValueError):
            return av.Codec(codec, mode).canonical_name in LEFT_SITED
    return codec in LEFT_SITED


def bit_depth(pix_fmt: str) -> int:
    return av.VideoFormat(pix_fmt).components[0].bits


# ----------------------------------------------------------------------------- PyAV frames
def read_planes(frame: av.VideoFrame, matrix: str, full_range: bool, cosited: bool) -> Planes:
    """Copy a decoded frame's planes out of FFmpeg's (padded) buffers."""
    name = frame.format.name
    dtype = np.uint16 if bit_depth(name) > 8 else np.uint8
    if name in SEMI_PLANAR:
        shift = SEMI_PLANAR[name][1]
        y = _plane_view(frame.planes[0], dtype) >> shift
        chroma = _plane_view(frame.planes[1], dtype, interleaved=True) >> shift
        return Planes(name, matrix, full_range, cosited, y, chroma[:, 0::2].copy(), chroma[:, 1::2].copy())
    y, cb, cr = (_plane_view(plane, dtype).copy() for plane in frame.planes[:3])
    return Planes(name, matrix, full_range, cosited, y, cb, cr)


def to_video_frame(planes: Planes, format: str | None = None) -> av.VideoFrame:
    """A frame for the encoder holding these samples (in `format` when given: the same samples,
    planar or semi-planar)."""
    name = format or planes.format
    frame = av.VideoFrame(planes.width, planes.height, name)
    if name in SEMI_PLANAR:
        shift = SEMI_PLANAR[name][1]
        _plane_view(frame.planes[0], planes.y.dtype)[...] = planes.y << shift
        chroma = _plane_view(frame.planes[1], planes.cb.dtype, interleaved=True)
        chroma[:, 0::2], chroma[:, 1::2] = planes.cb << shift, planes.cr << shift
        return frame
    for plane, samples in zip(frame.planes, (planes.y, planes.cb, planes.cr), strict=True):
        _plane_view(plane, samples.dtype)[...] = samples
    return frame


def planar_format(pix_fmt: str) -> str:
    """The planar format holding the same samples (for FFV1, which takes no semi-planar ones)."""
    return SEMI_PLANAR.get(pix_fmt, (pix_fmt,))[0]


def _plane_view(plane, dtype, interleaved: bool = False) -> np.ndarray:
    """(height, width) samples of a plane's buffer, whose rows are `line_size` bytes apart;
    twice as wide where Cb and Cr alternate."""
    row = plane.line_size // np.dtype(dtype).itemsize
    width = plane.width * (2 if interleaved else 1)
    return np.frombuffer(plane, dtype=dtype).reshape(-1, row)[: plane.height, :width]


# ----------------------------------------------------------------------------- YUV -> RGB
def yuv_to_rgb(planes: Planes, device: torch.device) -> Tensor:
    """(3, h, w) float32 RGB in [0, 1] on `device`, converted there."""
    depth = bit_depth(planes.format)
    y, cb, cr = (samples_to_device(samples, device) for samples in (planes.y, planes.cb, planes.cr))
    luma, (blue, red) = _normalise(y, cb, cr, depth, planes.full_range)
    h, w = planes.height, planes.width
    if cb.shape[-2] != h:
        blue, red = (_upsample(c.mT, h, cosited=False).mT for c in (blue, red))
    if cb.shape[-1] != w:
        blue, red = (_upsample(c, w, planes.cosited) for c in (blue, red))
    kr, kb = LUMA_WEIGHTS[planes.matrix]
    r = luma + (2 - 2 * kr) * red
    b = luma + (2 - 2 * kb) * blue
    g = (luma - kr * r - kb * b) / (1 - kr - kb)
    return torch.stack([r, g, b]).clamp_(0, 1)


def samples_to_device(samples: np.ndarray, device: torch.device) -> Tensor:
    """uint8 or uint16 samples as float32 code values on `device`."""
    if samples.dtype == np.uint16:  # torch has no uint16 arithmetic everywhere: move as int16
        return torch.from_numpy(samples.view(np.int16)).to(device).int().bitwise_and_(0xFFFF).float()
    return torch.from_numpy(samples).to(device).float()


def _normalise(y: Tensor, cb: Tensor, cr: Tensor, depth: int, full_range: bool) -> tuple[Tensor, list[Tensor]]:
    """Code values to Y in [0, 1] and Cb, Cr in [-0.5, 0.5]."""
    if full_range:
        peak = 2**depth - 1
        return y / peak, [(c - 2 ** (depth - 1)) / peak for c in (cb, cr)]
    step = 2 ** (depth - 8)
    return (y - 16 * step) / (219 * step), [(c - 128 * step) / (224 * step) for c in (cb, cr)]


def _upsample(chroma: Tensor, length: int, cosited: bool) -> Tensor:
    """Double the last axis (cropped to `length`). Chroma j sits at luma 2j + offset, so luma
    2j + r lies at chroma position j + (r - offset) / 2; the cubic weighs the samples around it."""
    offset = 0.0 if cosited else 0.5
    phases = []
    for r in (0, 1):
        position = (r - offset) / 2
        phases.append(_filter(chroma, {k: _cubic(k - position) for k in range(-2, 3)}))
    return torch.stack(phases, -1).flatten(-2)[..., :length]


def _cubic(distance: float) -> float:
    """Catmull-Rom cubic (Keys, a = -0.5): exact on linear ramps, sharper than linear."""
    x = abs(distance)
    if x < 1:
        return 1.5 * x**3 - 2.5 * x**2 + 1
    return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2 if x < 2 else 0.0


def _filter(values: Tensor, weights: dict[int, float]) -> Tensor:
    """out[..., i] = sum of weight * values[..., i + offset], the edge samples repeated outward."""
    weights = {k: w for k, w in weights.items() if w != 0}
    reach = max(abs(k) for k in weights)
    padded = torch.nn.functional.pad(values, (reach, reach), mode="replicate")
    n = values.shape[-1]
    return sum(w * padded[..., reach + k : reach + k + n] for k, w in weights.items())


# ----------------------------------------------------------------------------- RGB -> YUV
def rgb_to_yuv(rgb: Tensor, target: YuvTarget) -> list[Planes]:
    """(t, 3, h, w) RGB, any float range (clamped to [0, 1]) -> t frames in the target format,
    padded to its size by repeating the last row and column, quantised on the tensor's device.
    One frame at a time: a window of 4K frames in fp32 intermediates would take gigabytes."""
    return [_frame_to_yuv(frame, target) for frame in rgb]


def _frame_to_yuv(rgb: Tensor, target: YuvTarget) -> Planes:
    rgb = rgb.float().clamp(0, 1)  # (3, h, w)
    pad_w, pad_h = target.width - rgb.shape[-1], target.height - rgb.shape[-2]
    if pad_w or pad_h:
        rgb = torch.nn.functional.pad(rgb, (0, pad_w, 0, pad_h), mode="replicate")
    kr, kb = LUMA_WEIGHTS[target.matrix]
    r, g, b = rgb
    luma = kr * r + (1 - kr - kb) * g + kb * b
    blue, red = (b - luma) / (2 - 2 * kb), (r - luma) / (2 - 2 * kr)
    layout = av.VideoFormat(target.format)
    if layout.chroma_width(4) == 2:
        blue, red = (_halve(c, target.cosited) for c in (blue, red))
    if layout.chroma_height(4) == 2:
        blue, red = (_halve(c.mT, cosited=False).mT for c in (blue, red))
    depth = bit_depth(target.format)
    y, cb, cr = (_quantise(c, depth) for c in _code_values(luma, blue, red, depth, target.full_range))
    return Planes(target.format, target.matrix, target.full_range, target.cosited, y, cb, cr)


def _halve(values: Tensor, cosited: bool) -> Tensor:
    """Halve the last axis (rounding up): chroma j at luma 2j + offset is the cubic, stretched to
    twice its width, over the luma samples around it."""
    if values.shape[-1] % 2:
        values = torch.cat([values, values[..., -1:]], -1)
    offset = 0.0 if cosited else 0.5
    weights = {k: _cubic((k - offset) / 2) / 2 for k in range(-4, 5)}
    return _filter(values, weights)[..., 0::2]


def _code_values(y: Tensor, cb: Tensor, cr: Tensor, depth: int, full_range: bool) -> tuple[Tensor, Tensor, Tensor]:
    if full_range:
        peak = 2**depth - 1
        return y * peak, cb * peak + 2 ** (depth - 1), cr * peak + 2 ** (depth - 1)
    step = 2 ** (depth - 8)
    return y * 219 * step + 16 * step, cb * 224 * step + 128 * step, cr * 224 * step + 128 * step


def _quantise(values: Tensor, depth: int) -> np.ndarray:
    """Round and clamp on the device, then one transfer."""
    codes = values.round().clamp_(0, 2**depth - 1)
    if depth == 8:
        return codes.to(torch.uint8).cpu().numpy()
    if depth < 16:  # fits int16: half the bytes of int32 to move
        return codes.to(torch.int16).cpu().numpy().view(np.uint16)
    return codes.to(torch.int32).cpu().numpy().astype(np.uint16)
