"""`vsrpp bench`: frames/s of the network alone and of the whole `upscale` pipeline, memory, and
a quality guard (reduced precision against fp32), beside a plain fp32 implementation."""

from __future__ import annotations

import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_model
from .engine import PRECISIONS, pick_device
from .network import BasicVSRPlusPlus
from .network.deform_conv import resolve_backend

IDENTICAL_DB = 200.0  # reported for bit-identical outputs: JSON has no infinity


@dataclass
class Row:
    what: str  # "model" or "pipeline"
    precision: str
    backend: str
    device: str
    size: str  # input HxW
    frames: int
    fps: float
    ms_per_frame: float
    peak_gpu_mib: float | None
    peak_rss_mib: float
    psnr_vs_fp32: float | None = None
    max_diff_vs_fp32: float | None = None
    finite: bool = True
    colour: str | None = None  # pipeline rows: where YUV <-> RGB ran ("device" or "swscale")


def scene(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(t, h, w, 3) uint8: smooth texture panning 2 px a frame, like real video to the network."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 8 + frames + 4, width // 8 + frames + 4, 3))
    big = np.kron(coarse, np.ones((8, 8, 1)))
    clip = [big[i : i + height, 2 * i : 2 * i + width] for i in range(frames)]
    return (np.stack(clip) * 255).astype(np.uint8)


def build_model(weights: Path | None, device: torch.device, dtype: torch.dtype, backend: str) -> BasicVSRPlusPlus:
    if weights is not None:
        model = load_model(weights, device, dtype, deform_backend=backend)
    else:  # random weights: the speed does not depend on them
        torch.manual_seed(0)
        model = BasicVSRPlusPlus(deform_backend=backend).to(device, dtype).eval()
    return model


def time_model(model: BasicVSRPlusPlus, clip: torch.Tensor, repeat: int) -> tuple[float, torch.Tensor]:
    """Seconds per run (best of `repeat`, after a warm-up run) and the last output."""
    device = clip.device
    with torch.no_grad():
        out = model(clip)
        best = float("inf")
        for _ in range(repeat):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            out = model(clip)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
    return best, out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(
    size: tuple[int, int],
    frames: int,
    precisions: list[str],
    device_name: str = "auto",
    backends: tuple[str, ...] = ("auto",),
    weights: Path | None = None,
    baseline: bool = True,
    pipeline: bool = True,
    repeat: int = 2,
    colours: tuple[str, ...] = ("device",),
) -> list[Row]:
    device = pick_device(device_name)
    h, w = size
    frames_u8 = scene(frames, h, w)
    clip32 = torch.from_numpy(frames_u8).permute(0, 3, 1, 2).float().div(255)[None].to(device)
    rows: list[Row] = []
    reference = None
    runs = [("fp32", "plain")] if baseline else []
    runs += [(p, b) for p in precisions for b in backends]
    for precision, backend in runs:
        dtype = PRECISIONS[precision]
        concrete = resolve_backend(backend, device, dtype)
        model = build_model(weights, device, dtype, concrete)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds, out = time_model(model, clip32.to(dtype), repeat)
        out = out.float().clamp(0, 1)
        row = Row(
            "model",
            precision,
            concrete,
            str(device),
            f"{h}x{w}",
            frames,
            frames / seconds,
            1000 * seconds / frames,
            torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
            peak_rss_mib(),
            finite=bool(torch.isfinite(out).all()),
        )
        if precision == "fp32" and reference is None:
            reference = out
        elif reference is not None:
            mse = float(((out - reference) ** 2).mean())
            row.psnr_vs_fp32 = IDENTICAL_DB if mse == 0 else min(IDENTICAL_DB, 10 * np.log10(1 / mse))
            row.max_diff_vs_fp32 = float((out - reference).abs().max())
        rows.append(row)
        del model
    if pipeline:
        for precision in precisions:
            for colour in colours:
                rows.append(time_pipeline(frames_u8, precision, device_name, weights, colour))
    return rows


def time_pipeline(
    frames_u8: np.ndarray, precision: str, device_name: str, weights: Path | None, colour: str = "device"
) -> Row:
    """The whole `upscale` path: decode, windows, network, quantise, encode (libx264), mux."""
    import av

    from .upscale import Options, upscale

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "in.mp4"
        with av.open(str(source), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.height, stream.width = frames_u8.shape[1:3]
            stream.pix_fmt = "yuv420p"
            for rgb in frames_u8:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            container.mux(stream.encode())
        if weights is None:
            weights = Path(folder) / "random.pth"
            torch.manual_seed(0)
            torch.save(BasicVSRPlusPlus().state_dict(), weights)
        options = Options(
            weights,
            device=device_name,
            precision=precision,
            chunk_frames=len(frames_u8),
            chunk_overlap=0,
            colour=colour,
        )
        upscale(source, Path(folder) / "warmup.mp4", options)  # loads kernels, caches
        start = time.perf_counter()
        summary = upscale(source, Path(folder) / "out.mp4", options)
        seconds = time.perf_counter() - start
    t, h, w = frames_u8.shape[:3]
    device = pick_device(device_name)
    return Row(
        "pipeline",
        precision,
        "auto",
        str(device),
        f"{h}x{w}",
        t,
        summary.frames / seconds,
        1000 * seconds / summary.frames,
        torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        peak_rss_mib(),
        colour=colour,
    )
