"""`vsrpp preview`: a few moments of a video upscaled exactly as `upscale` would upscale them, side
by side with the source enlarged bicubically, with the time and size the whole video would take.

Each moment is the frame `upscale` would give: the window that holds it (the same chunk and
overlap, so the same temporal context), through the same engine. One image per moment: a label
band, then the source enlarged (bicubic) beside each setting's output, then below each a zoom
(2x, nearest) on the most detailed quarter of the frame.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import OutputError, UsageError, os_error_advice
from ..run.engine import build_engine, pick_device, pick_dtype
from ..run.options import Options
from ..run.sizing import window_shape
from ..run.windows import WindowTable
from ..video.decode import Source
from ..video.encode import CONTAINERS, EncoderSettings, VideoEncoder
from ..video.images import write_png
from ..video.inputs import open_source
from ..video.shots import check_setting, find_cuts
from ..video.tensors import frames_to_tensor, tensor_to_frames
from ..weights.checkpoint import read_checkpoint
from .labels import draw_text

BAND = 24  # label band height, pixels
GAP = 4  # between panels
MOMENTS = 3  # spread over the video when --at is not given


@dataclass
class Setting:
    weights: Path
    model: str | None = None  # the zoo's name for the weights, when they came from there
    strength: float = 1.0

    @property
    def label(self) -> str:
        """What the panel says: the model (or file) and the strength when not 1."""
        name = self.model or self.weights.name
        return name if self.strength == 1 else f"{name} strength {self.strength:g}"

    @property
    def flags(self) -> list[str]:
        chosen = ["--model", self.model] if self.model else ["--weights", str(self.weights)]
        return chosen + (["--strength", f"{self.strength:g}"] if self.strength != 1 else [])


@dataclass
class Estimate:
    setting: str
    seconds_per_window: float
    windows: int
    whole_video_seconds: float
    output_bytes: int  # from the moments' frames through the output's encoder
    command: str


@dataclass
class PreviewReport:
    images: list[str] = field(default_factory=list)
    moments: list[dict[str, Any]] = field(default_factory=list)  # frame, seconds, panels' boxes
    estimates: list[Estimate] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.images, "moments": self.moments, "estimates": [e.__dict__ for e in self.estimates]}


def parse_time(text: str) -> float:
    """'83', '83.5', '1:23' or '00:01:23.5' -> seconds."""
    if not re.fullmatch(r"(\d+:){0,2}\d+(\.\d+)?", text):
        raise UsageError(f"--at {text}: give a time as SECONDS, MM:SS or HH:MM:SS, e.g. --at 00:01:23")
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def pick_frames(source: Source, at: list[float]) -> list[int]:
    """Frame indices: those at the times given, or MOMENTS spread over the video."""
    info = source.info
    count = info.frame_count or info.frame_estimate or (len(source.files) if source.files else None)
    rate = float(info.frame_rate or 25)
    if not at:
        if not count:
            raise UsageError(f"{source.path}: its length is unknown; give the moments with --at")
        return sorted({min(count - 1, int(count * (2 * k + 1) / (2 * MOMENTS))) for k in range(MOMENTS)})
    frames = []
    for seconds in at:
        index = round(seconds * rate)
        if count and index >= count:
            raise UsageError(
                f"--at {_clock(seconds)} is past the end of {source.path.name} ({count / rate:.2f} s long)"
            )
        frames.append(index)
    return frames


def preview(
    source_path: Path,
    folder: Path,
    settings: list[Setting],
    options: Options,
    at: list[float],
    notice: Callable[[str], None] = lambda message: None,
) -> PreviewReport:
    source = open_source(source_path, options.deinterlace, notice, options.fps)
    info = source.info
    frames = pick_frames(source, at)
    device = pick_device(options.device)
    report = PreviewReport()
    columns: dict[int, list[tuple[str, np.ndarray]]] = {frame: [] for frame in frames}
    sources: dict[int, np.ndarray] = {}
    check_setting(options.scene_cuts)
    cuts = find_cuts(options.scene_cuts, source, info.frame_count, notice)  # the shots upscale would find
    for setting in settings:
        moments = Moments(source, frames, cuts, options, setting, device, notice)
        for frame, upscaled in moments.upscaled(sources):
            columns[frame].append((setting.label, to_rgb8(upscaled)))
        report.estimates.append(moments.estimate(source_path))
    folder_ready(folder)
    rate = float(info.frame_rate or 25)
    for number, frame in enumerate(frames, start=1):
        image, boxes = compose(sources[frame], columns[frame], f"{source_path.name} {_clock(frame / rate)}")
        path = folder / f"preview-{number:02d}-{_clock(frame / rate).replace(':', '-')}.png"
        write_whole_png(image, path)
        report.images.append(str(path))
        report.moments.append({"frame": frame, "seconds": round(frame / rate, 3), "image": str(path), "panels": boxes})
    return report


class Moments:
    """The chosen frames upscaled with one setting, each in the window `upscale` runs for it
    (windows.WindowTable, shot by shot), timed, to estimate the whole run."""

    def __init__(self, source: Source, frames: list[int], cuts: list[int], options: Options, setting: Setting,
                 device: torch.device, notice: Callable[[str], None]) -> None:  # fmt: skip
        self.source, self.frames, self.options, self.setting, self.device = source, frames, options, setting, device
        info = source.info
        dtype = pick_dtype(options.precision, device)
        mid_channels = read_checkpoint(setting.weights).architecture["mid_channels"]
        self.chunk, tile = window_shape(device, info.width, info.height, mid_channels, dtype.itemsize, options)
        self.table = WindowTable(self.chunk, options.chunk_overlap, cuts, info.frame_count)
        self.engine = build_engine(replace(options, strength=setting.strength), setting.weights, info, device, tile,
                                   0, notice, batch=1)  # fmt: skip
        self.seconds: list[float] = []
        self.all: list[np.ndarray] = []  # every upscaled frame (to estimate the output's size)

    def upscaled(self, enlarged: dict[int, np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
        """Each moment's upscaled frame; `enlarged` gets its source frame enlarged bicubically."""
        info, keep_yuv = self.source.info, self.options.colour == "device"
        for frame in self.frames:
            span = self.table.span(self.table.window_of(frame))  # the window upscale runs for this frame
            start, keep_start = span.start, span.keep_start
            window = [f.image for f in itertools.islice(self.source.frames(keep_yuv, first=start), span.stop - start)]
            if not window:
                raise UsageError(f"frame {frame} is past the end of {self.source.path.name}")
            began = time.perf_counter()
            kept = slice(keep_start - start, min(span.keep_stop - start, len(window)))
            upscaled = self.engine.upscale(window, kept, info.bit_depth)
            self.seconds.append(time.perf_counter() - began)
            self.all += upscaled
            if frame not in enlarged:
                enlarged[frame] = enlarged_source(window[frame - start], self.engine.scale, self.device)
            yield frame, upscaled[frame - keep_start]

    def estimate(self, source_path: Path) -> Estimate:
        info, median = self.source.info, float(np.median(self.seconds))
        windows = len(self.table) if info.frame_count else math.ceil((info.frame_estimate or 1) / self.chunk)
        return Estimate(self.setting.label, round(median, 3), windows, round(median * windows, 1),
                        estimate_bytes(self.all, info, self.options, source_path, self.engine.scale),
                        upscale_command(source_path, self.setting, self.options))  # fmt: skip


def to_rgb8(frame: np.ndarray) -> np.ndarray:
    return (frame >> 8).astype(np.uint8) if frame.dtype == np.uint16 else frame


def enlarged_source(image: Any, scale: int, device: torch.device) -> np.ndarray:
    """The source frame enlarged with bicubic interpolation (what a player's scaler shows),
    converted to RGB as the engine converts it."""
    rgb = frames_to_tensor([image], device, torch.float32)[0]  # (1, 3, h, w)
    big = F.interpolate(rgb, scale_factor=scale, mode="bicubic", align_corners=False) if scale > 1 else rgb
    return to_rgb8(tensor_to_frames(big[None], 8)[0])


def detailed_quarter(image: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the half-height, half-width region with the most detail (gradient
    energy), on a coarse grid so that it is found quickly."""
    h, w = image.shape[:2]
    ch, cw = max(1, h // 2), max(1, w // 2)
    grey = image.astype(np.float32).mean(axis=2)
    energy = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]
    best, where = -1.0, (0, 0)
    for top in range(0, h - ch + 1, max(1, ch // 4)):
        for left in range(0, w - cw + 1, max(1, cw // 4)):
            score = float(energy[top : top + ch - 1, left : left + cw - 1].sum())
            if score > best:
                best, where = score, (top, left)
    return (*where, ch, cw)


def compose(
    source: np.ndarray, outputs: list[tuple[str, np.ndarray]], title: str
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The image: a label band, [bicubic | output...] at full size, then a 2x zoom of each on the
    same detailed region. Returns it and each panel's box (x, y, w, h) in it."""
    h, w = source.shape[:2]
    panels = [("bicubic", source), *outputs]
    top, left, ch, cw = detailed_quarter(outputs[0][1])
    width = len(panels) * w + (len(panels) - 1) * GAP
    image = np.zeros((BAND + h + GAP + 2 * ch, width, 3), np.uint8)
    boxes = []
    for i, (label, panel) in enumerate(panels):
        x = i * (w + GAP)
        image[BAND : BAND + h, x : x + w] = panel
        zoom = panel[top : top + ch, left : left + cw].repeat(2, axis=0).repeat(2, axis=1)
        image[BAND + h + GAP : BAND + h + GAP + 2 * ch, x : x + 2 * cw] = zoom
        draw_text(image, label if i else f"{label}  {title}", 5, x + 4, width=w - 8)
        boxes.append({"label": label, "box": [x, BAND, w, h], "zoom": [x, BAND + h + GAP, 2 * cw, 2 * ch]})
    return image, boxes


def estimate_bytes(frames: list[np.ndarray], info: Any, options: Options, source_path: Path, scale: int) -> int:
    """Bytes of the whole output: the moments' frames through the output's encoder, per frame,
    times the frames of the video (video only; audio is copied as it is)."""
    settings = EncoderSettings(CONTAINERS[".mp4"], options.codec, options.crf, options.preset, options.pix_fmt)
    encoder = VideoEncoder(settings, info, (info.width * scale, info.height * scale))
    try:
        sizes = [packet.size for index, frame in enumerate(frames) for packet in encoder.encode(frame, index)]
        sizes += [packet.size for packet in encoder.flush()]
    finally:
        encoder.close()
    total = info.frame_count or info.frame_estimate or len(frames)
    return int(sum(sizes) / max(1, len(frames)) * total)


def upscale_command(source_path: Path, setting: Setting, options: Options) -> str:
    parts = ["vsrpp", "upscale", str(source_path), f"{source_path.stem}-x4.mp4", *setting.flags]
    for flag, value, default in (
        ("--device", options.device, "auto"),
        ("--precision", options.precision, "auto"),
        ("--chunk-frames", options.chunk_frames, 0),
        ("--chunk-overlap", options.chunk_overlap, 8),
        ("--scene-cuts", options.scene_cuts, "auto"),
        ("--tile", options.tile, 0),
        ("--codec", options.codec, None),
        ("--crf", options.crf, None),
        ("--preset", options.preset, None),
    ):
        if value != default:
            parts += [flag, str(value)]
    return " ".join(parts)


def folder_ready(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise os_error_advice(error, folder.parent, "the preview folder") or error from None
    if not folder.is_dir():
        raise OutputError(f"{folder} is not a folder; choose a folder for the preview images")


def write_whole_png(image: np.ndarray, path: Path) -> None:
    """Written under a temporary name and renamed: an image is whole or absent."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        write_png(image, partial)
        partial.replace(path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise os_error_advice(error, path.parent, path.name) or error from None


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"
