"""`vsrpp bench`: frames/s of the network alone and of the whole `upscale` pipeline, time per
stage, the encoder's own speed, memory, and a quality guard (reduced precision against fp32),
beside a plain fp32 implementation written apart from ours (network/plain.py).

Every row measures itself: the GPU's peak-memory counter is reset before each, and each model
row builds its own model. benchmarks/gpu.sh runs the whole matrix on a GPU machine.
"""

from __future__ import annotations

import resource
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..network import BasicVSRPlusPlus
from ..network.basicvsrpp import BRANCHES, AlignmentPlan
from ..network.deform_conv import modulated_deform_conv2d, resolve_backend
from ..network.plain import PlainBasicVSRPlusPlus
from ..run.engine import (
    PRECISIONS,
    compile_alignment,
    pick_device,
    place_model,
    slow_on_this_cpu,
    slow_precision_advice,
)
from ..run.threads import network_thread, use_threads
from ..video.tensors import frames_to_tensor
from ..weights.checkpoint import load_model

IDENTICAL_DB = 200.0  # reported for bit-identical outputs: JSON has no infinity


@dataclass
class Row:
    what: str  # "model", "pipeline", "stage" or "encoder"
    precision: str
    backend: str
    device: str
    size: str  # input HxW (encoder rows: the encoded size)
    frames: int
    fps: float
    ms_per_frame: float  # stage rows: per call of the stage (see `stage`)
    peak_gpu_mib: float | None
    peak_rss_mib: float
    psnr_vs_fp32: float | None = None
    max_diff_vs_fp32: float | None = None
    finite: bool = True
    colour: str | None = None  # pipeline rows: where YUV <-> RGB ran ("device" or "swscale")
    graphs: bool = False  # propagation steps replayed as CUDA graphs
    batch: int = 1  # clips per forward
    threads: int = 0  # torch's intra-op threads
    stage: str | None = None  # stage rows: which stage; encoder rows: the codec
    compiled: bool = False  # the alignment modules through torch.compile
    first_call_s: float | None = None  # model rows: the warm-up call (compilation, capture, cuDNN's search)


def scene(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(t, h, w, 3) uint8: smooth texture panning 2 px a frame, like real video to the network."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 8 + frames + 4, width // 8 + frames + 4, 3))
    big = np.kron(coarse, np.ones((8, 8, 1)))
    clip = [big[i : i + height, 2 * i : 2 * i + width] for i in range(frames)]
    return (np.stack(clip) * 255).astype(np.uint8)


def build_model(
    weights: Path | None,
    device: torch.device,
    dtype: torch.dtype,
    backend: str,
    graphs: bool = False,
    compiled: bool = False,
) -> BasicVSRPlusPlus:
    if weights is not None:
        model = load_model(weights, deform_backend=backend)
    else:  # random weights: the speed does not depend on them
        torch.manual_seed(0)
        model = BasicVSRPlusPlus(deform_backend=backend)
    model = place_model(model, device, dtype, graphs)
    if compiled:
        compile_alignment(model)
    return model


def best_seconds(run: Callable[[], object], device: torch.device, repeat: int) -> tuple[float, object, float]:
    """Seconds per call (best of `repeat`, after a warm-up call), the last result, and the
    seconds of the warm-up call (compilation, graph capture, cuDNN's search). On the CPU in the
    network's own thread, as the engine runs it (denormals flushed in every OpenMP thread), so
    that the figure is the network's speed in `upscale`, whatever thread calls."""

    def measure() -> tuple[float, object, float]:
        with torch.no_grad():
            start = time.perf_counter()
            result = run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            warmup = time.perf_counter() - start
            best = float("inf")
            for _ in range(repeat):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                result = run()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                best = min(best, time.perf_counter() - start)
            return best, result, warmup

    return network_thread().run(measure, threading.Event()) if device.type == "cpu" else measure()


def time_model(model: BasicVSRPlusPlus, clip: torch.Tensor, repeat: int) -> tuple[float, torch.Tensor, float]:
    return best_seconds(lambda: model(clip), clip.device, repeat)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gpu_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


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
    graphs: tuple[bool, ...] = (True,),
    batches: tuple[int, ...] = (1,),
    stages: bool = False,
    compiled: tuple[bool, ...] = (False,),
    warn: Callable[[str], None] = lambda message: None,
) -> list[Row]:
    device = pick_device(device_name)
    if device.type == "cpu":
        use_threads()
        for precision in precisions:  # said before the minutes it costs, not after
            if slow_on_this_cpu(PRECISIONS[precision]):
                warn(slow_precision_advice(PRECISIONS[precision]))
    graph_modes = graphs if device.type == "cuda" else (False,)  # graphs exist on CUDA only
    h, w = size
    frames_u8 = scene(frames, h, w)
    clip32 = frames_to_tensor(list(frames_u8), device, torch.float32)
    rows: list[Row] = []
    reference = None
    runs = [("fp32", "plain", False, 1, False)] if baseline else []
    runs += [
        (p, b, g, n, c) for p in precisions for b in backends for g in graph_modes for n in batches for c in compiled
    ]
    for precision, backend, graphed, batch, compile_it in runs:
        concrete = resolve_backend(backend, device, PRECISIONS[precision])
        reset_peak(device)
        model = bench_model(weights, device, precision, backend, concrete, graphed, compile_it)
        clip = clip32.to(PRECISIONS[precision]).expand(batch, *clip32.shape[1:]).contiguous()
        row, out = model_row(model, clip, precision, concrete, graphed, compile_it, repeat)
        if precision == "fp32" and reference is None:
            reference = out
        elif reference is not None:
            mse = float(((out - reference) ** 2).mean())
            row.psnr_vs_fp32 = IDENTICAL_DB if mse == 0 else min(IDENTICAL_DB, 10 * np.log10(1 / mse))
            row.max_diff_vs_fp32 = float((out - reference).abs().max())
        rows.append(row)
        if stages and frames > 1 and (precision, backend) != ("fp32", "plain") and batch == batches[0]:
            rows.extend(time_stages(model, clip, precision, concrete, graphed, repeat))
        del model
    if pipeline:
        for precision in precisions:
            for colour in colours:
                for graphed in graph_modes:
                    rows.append(time_pipeline(frames_u8, precision, device_name, weights, colour, graphed))
    return rows


def bench_model(
    weights: Path | None, device: torch.device, precision: str, backend: str, concrete: str, graphed: bool,
    compile_it: bool,
) -> torch.nn.Module:  # fmt: skip
    """Ours as upscale runs it, or for the baseline ("plain") a separate, straightforward
    implementation (network/plain.py) in fp32 with the same weights."""
    if backend != "plain":
        return build_model(weights, device, PRECISIONS[precision], concrete, graphed, compile_it)
    ours = build_model(weights, device, torch.float32, "torch")
    return PlainBasicVSRPlusPlus(ours.state_dict()).to(device)


def model_row(
    model: torch.nn.Module, clip: torch.Tensor, precision: str, concrete: str, graphed: bool, compile_it: bool,
    repeat: int,
) -> tuple[Row, torch.Tensor]:  # fmt: skip
    """The network alone on `clip` (batch, t, 3, h, w): its row, and its first output in [0, 1]."""
    batch, frames, _, h, w = clip.shape
    seconds, out, warmup = time_model(model, clip, repeat)
    row = Row("model", precision, concrete, str(clip.device), f"{h}x{w}", frames * batch, frames * batch / seconds,
              1000 * seconds / (frames * batch), peak_gpu_mib(clip.device), peak_rss_mib(),
              finite=bool(torch.isfinite(out[:1]).all()), graphs=graphed, batch=batch, threads=torch.get_num_threads(),
              compiled=compile_it, first_call_s=warmup)  # fmt: skip
    return row, out[:1].float().clamp(0, 1)


def time_stages(
    model: BasicVSRPlusPlus, clip: torch.Tensor, precision: str, backend: str, graphed: bool, repeat: int
) -> list[Row]:
    """Milliseconds of each part of the forward, on the clip's own tensors: the batched stages
    per frame, the propagation step and the DCN per call."""
    device = clip.device
    n, t, c, h, w = clip.shape
    frames = clip.reshape(n * t, c, h, w)
    rows: list[Row] = []

    def add(stage: str, seconds: float, per: int) -> None:
        ms = 1000 * seconds / per
        rows.append(
            Row(
                "stage", precision, backend, str(device), f"{h}x{w}", per, 1000 / ms, ms,
                peak_gpu_mib(device), peak_rss_mib(), graphs=graphed, batch=n,
                threads=torch.get_num_threads(), stage=stage,
            )
        )  # fmt: skip

    with torch.no_grad():
        seconds, spatial, _ = best_seconds(lambda: model.feat_extract(frames), device, repeat)
        add("feature extraction (per frame)", seconds, n * t)
        seconds, (_, forward), _ = best_seconds(lambda: model.compute_flows(clip, False), device, repeat)
        add("SPyNet, both directions (per frame)", seconds, n * t)
        seconds, plan, _ = best_seconds(lambda: AlignmentPlan.from_walk_flows(forward), device, repeat)
        add("flow plan: second-order flows, grids (per frame, per direction)", seconds, n * t)
        spatial = spatial.view(n, t, *spatial.shape[1:])
        feat = spatial[:, 0].contiguous(memory_format=torch.channels_last) if device.type == "cuda" else spatial[:, 0]
        grids, flows, offset_flows = plan.step(min(2, t - 1))
        for i, name in enumerate(BRANCHES):
            args = (feat, feat, grids, flows, offset_flows, *[feat] * (1 + i))
            seconds, *_ = best_seconds(partial(model.steps[name][1], *args), device, repeat)
            add(f"propagation step, {name} (per step)", seconds, 1)
        align = model.deform_align[BRANCHES[0]]
        x = torch.cat([feat, feat], dim=1)
        offset = 3 * torch.randn(n, 288, *feat.shape[-2:], device=device)
        mask = torch.rand(n, 144, *feat.shape[-2:], device=device, dtype=feat.dtype)
        dcn = lambda: modulated_deform_conv2d(x, offset, mask, align.weight, align.bias, 1, backend)  # noqa: E731
        seconds, *_ = best_seconds(dcn, device, repeat)
        add("deformable conv alone (per call)", seconds, 1)
        feats = {name: [feat] * t for name in ("spatial", *BRANCHES)}
        seconds, *_ = best_seconds(lambda: model.reconstruct(clip, feats), device, repeat)
        add("reconstruction and upsampling (per frame)", seconds, n * t)
    return rows


def time_pipeline(
    frames_u8: np.ndarray,
    precision: str,
    device_name: str,
    weights: Path | None,
    colour: str = "device",
    graphs: bool = True,
    batch: int = 1,
) -> Row:
    """The whole `upscale` path: decode, windows, network, quantise, encode (libx264), mux."""
    import av

    from ..run.pipeline import Options, upscale

    device = pick_device(device_name)
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
            graphs=graphs,
            batch=batch,
        )
        upscale(source, Path(folder) / "warmup.mp4", options)  # loads kernels, caches
        reset_peak(device)
        start = time.perf_counter()
        summary = upscale(source, Path(folder) / "out.mp4", options)
        seconds = time.perf_counter() - start
    t, h, w = frames_u8.shape[:3]
    return Row(
        "pipeline",
        precision,
        "auto",
        str(device),
        f"{h}x{w}",
        t,
        summary.frames / seconds,
        1000 * seconds / summary.frames,
        peak_gpu_mib(device),
        peak_rss_mib(),
        colour=colour,
        graphs=graphs and device.type == "cuda",
        batch=summary.batch,
        threads=torch.get_num_threads(),
    )


def time_encoders(sizes: list[tuple[int, int]], frames: int, codecs: tuple[str, ...]) -> list[Row]:
    """The encoder alone, as upscale drives it (yuv420p frames in): at 4K output a CPU encoder
    can be the pipeline's limit. A codec this FFmpeg cannot open gets a row with 0 fps."""
    import av

    rows = []
    for h, w in sizes:
        planes = scene(frames, h, w)
        video = [av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p") for rgb in planes]
        for codec in codecs:
            fps, note = 0.0, codec
            try:
                with tempfile.TemporaryDirectory() as folder, av.open(str(Path(folder) / "out.mp4"), "w") as out:
                    stream = out.add_stream(codec, rate=25)
                    stream.height, stream.width, stream.pix_fmt = h, w, "yuv420p"
                    out.mux(stream.encode(video[0]))  # opens the encoder
                    start = time.perf_counter()
                    for frame in video[1:]:
                        out.mux(stream.encode(frame))
                    out.mux(stream.encode())
                    fps = (len(video) - 1) / (time.perf_counter() - start)
            except Exception as error:  # not built into this FFmpeg, no driver, no device
                note = f"{codec}: unavailable ({str(error).splitlines()[0][:80]})"
            rows.append(
                Row("encoder", "-", "-", "cpu" if "nvenc" not in codec else "nvenc", f"{h}x{w}", frames, fps,
                    1000 / fps if fps else 0.0, None, peak_rss_mib(), stage=note)
            )  # fmt: skip
    return rows
