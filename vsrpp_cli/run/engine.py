"""Running the network on one window: device, precision, tiles, and the ways that goes wrong
(out of memory, NaN/Inf in reduced precision) handled without losing a frame."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from ..network import BasicVSRPlusPlus
from ..network.basicvsrpp import BRANCHES, RECONSTRUCTION_UNITS
from ..video.colour import Planes, YuvTarget
from ..video.info import Frame, VideoInfo
from ..video.tensors import frames_to_tensor, tensor_to_frames
from ..weights.checkpoint import load_model
from .options import Options
from .sizing import MIN_TILE, default_batch
from .threads import network_thread, use_threads
from .windows import Window, run_count, run_tiled

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: choose auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: vsrpp runs on cpu or cuda (cuda:N); choose one of those")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_backend(name: str, device: torch.device, dtype: torch.dtype) -> None:
    """--deform-backend NAME must work here before any work starts."""
    from ..network.deform_conv import BACKENDS, backend_works

    if name == "auto":
        return
    if name not in BACKENDS:
        raise UsageError(f"--deform-backend {name}: choose auto, {', '.join(BACKENDS)}")
    if not backend_works(name, str(device), dtype):
        raise UsageError(
            f"--deform-backend {name}: not usable on {device.type} in {str(dtype).removeprefix('torch.')} here (not "
            "installed, or it failed its check); `vsrpp info --backends` lists those that work"
        )


def slow_on_this_cpu(dtype: torch.dtype) -> bool:
    """Whether PyTorch convolves `dtype` on this CPU with its reference kernel (_slow_conv2d),
    40-90x slower than fp32. It takes oneDNN for a half type only where oneDNN computes that type
    on this CPU (aten/src/ATen/native/ConvUtils.h, ConvParams::use_mkldnn, through
    mkldnn_bf16_device_check and mkldnn_fp16_device_check): bf16 needs AVX-512, fp16 AVX-512 FP16
    or AMX. fp32 is fast everywhere (oneDNN, or im2col and BLAS for small convolutions)."""
    checks = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}
    if dtype not in checks:
        return False
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return True  # a build without oneDNN (whose ops are then not registered), or oneDNN turned off
    return not getattr(torch.ops.mkldnn, checks[dtype])()


def slow_precision_advice(dtype: torch.dtype, flag: str = "--precision", full: str = "fp32") -> str:
    """The warning for a precision this CPU has no fast convolution for, naming what is faster
    (`flag full`: the option that runs in fp32, or the other half type where it is fast here)."""
    name = {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    other, other_name = (torch.bfloat16, "bf16") if dtype == torch.float16 else (torch.float16, "fp16")
    faster = f"{flag} {full}" + ("" if slow_on_this_cpu(other) else f" or {other_name}")
    # Measured: fp16 90x on a 2-core Xeon with AVX-512 (the tests' C8/N1 network, one thread:
    # 14.3 s against 0.16 s a 64x64 frame; the official C64/N7 at 64x64 in `vsrpp bench`: 93.9 s
    # against 381 ms a frame), bf16 47x on a 2-core EPYC with AVX2 only (C16/N2, 2 threads:
    # 19.7 s against 0.42 s for 2 frames; benchmarks/RESULTS.md, 2026-12-06 eleventh).
    return (
        f"{name} on this CPU is 40-90x slower than fp32 (PyTorch has no fast {name} convolution for it: "
        f"bf16 needs AVX-512, fp16 AVX-512 FP16 or AMX); {faster} is faster"
    )


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision}: choose auto, fp32, fp16 or bf16")
    return PRECISIONS[precision]


class Engine:
    """Turns windows of frames (RGB or YUV) into upscaled frames (RGB, or YUV for an encoder).

    On CUDA: cuDNN picks its fastest algorithms, tensors are channels-last (tensor cores' native
    layout), and the propagation steps replay as CUDA graphs unless `graphs` is False.
    """

    def __init__(
        self,
        model: BasicVSRPlusPlus,
        device: torch.device,
        dtype: torch.dtype,
        tile: int = 0,
        tile_overlap: int = 16,
        warn: Callable[[str], None] = lambda message: None,
        graphs: bool = True,
        batch: int = 1,
        compile: bool = False,
        strength: float = 1.0,
        deterministic: bool = False,
    ) -> None:
        if not 0.0 <= strength <= 1.0:
            raise UsageError(f"--strength {strength}: give a value from 0 (the enlarged source) to 1 (the network)")
        self.strength = strength  # the output blended with the enlarged source: 1 is the network alone
        # Full-precision weights stay on the host for windows that must be recomputed in fp32.
        self.fp32_state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
        self.device, self.dtype = device, dtype
        self.graphs = graphs
        self.model = place_model(model, device, dtype, graphs)
        if compile:
            compile_alignment(self.model)
        self.tile, self.tile_overlap = tile, tile_overlap
        self.batch = max(1, batch)  # windows or tiles per forward
        make_deterministic(deterministic)
        self.warn = warn
        self.fp32_fallbacks = 0
        self.progress: Callable[[int], None] | None = None  # hears the units of work done in a forward
        self.cancel = threading.Event()  # set: the forward running on the network's thread stops at its next step
        self.model.on_step = self._on_step
        if device.type == "cpu":
            use_threads()  # all of this process's cores, unless OMP_NUM_THREADS says otherwise
            if slow_on_this_cpu(dtype):
                warn(slow_precision_advice(dtype))

    @property
    def scale(self) -> int:
        return self.model.scale

    def upscale(
        self, frames: list[np.ndarray | Planes], keep: slice, bit_depth: int, target: YuvTarget | None = None
    ) -> list[np.ndarray | Planes]:
        """Run the whole window, return only its kept frames, converted and quantised on the device."""
        return self.upscale_many([(frames, keep)], bit_depth, target)[0]

    def upscale_many(
        self,
        windows: list[tuple[list[np.ndarray | Planes], slice]],
        bit_depth: int,
        target: YuvTarget | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> list[list[np.ndarray | Planes]]:
        """Windows of equal length and frame size through the network together, on the batch
        dimension; each window's kept frames, as `upscale` gives them. `on_progress` hears the
        fraction of the work done (0 to 1) after every propagation step."""
        self.progress = self._step_counter(windows, on_progress) if on_progress else None
        try:
            outs = self.infer_many([frames for frames, _ in windows])
        finally:
            self.progress = None
        return [tensor_to_frames(out[:, keep], bit_depth, target) for out, (_, keep) in zip(outs, windows, strict=True)]

    def upscale_windows(
        self, windows: list[Window[Frame]], bit_depth: int, target: YuvTarget | None = None,
        within: Callable[[float], None] | None = None,
    ) -> list[list[np.ndarray | Planes]]:  # fmt: skip
        """A batch of windows (windows.batches) through the network together: each one's kept
        frames. `within` hears the kept frames done so far (a fraction of the batch's) as it goes."""
        kept = sum(window.keep.stop - window.keep.start for window in windows)
        runs = [([frame.image for frame in window.items], window.keep) for window in windows]
        return self.upscale_many(runs, bit_depth, target, (lambda done: within(done * kept)) if within else None)

    def _step_counter(self, windows: list[tuple[list, slice]], on_progress: Callable[[float], None]) -> Callable:
        frames = windows[0][0]
        h, w = (frames[0].height, frames[0].width) if isinstance(frames[0], Planes) else frames[0].shape[:2]
        calls = run_count(len(windows), h, w, self.tile, self.tile_overlap, self.batch)
        total = (len(BRANCHES) + RECONSTRUCTION_UNITS) * len(frames) * calls  # per forward: t frames, n windows
        done = 0

        def step(units: int) -> None:
            nonlocal done
            done += units
            on_progress(min(done / total, 1.0))  # a retry after running out of memory counts again

        return step

    def infer(self, frames: list[np.ndarray | Planes], mirrored: bool = False) -> Tensor:
        """The network's output (1, t, 3, sh, sw) for a window, unclamped, always finite.
        `mirrored`: the window's second half is its first reversed (the network then skips half
        of the flows)."""
        return self.infer_many([frames], mirrored)[0]

    def infer_many(self, windows: list[list[np.ndarray | Planes]], mirrored: bool = False) -> list[Tensor]:
        """Each window's (1, t, 3, sh, sw) output, for windows of equal length and frame size run
        together. A window whose reduced-precision output holds NaN or Inf is recomputed alone in
        fp32; the others keep theirs, so a window's output never depends on its batch."""
        clip = torch.cat([frames_to_tensor(frames, self.device, self.dtype) for frames in windows])
        if self.strength == 0.0:  # the enlarged source alone: nothing of the network's would be kept
            return list(self.model.skip(clip).split(1))
        clips, outs = list(clip.split(1)), list(self._run_fitting_memory(clip, mirrored).split(1))
        for index, out in enumerate(outs):
            if self.dtype != torch.float32 and not torch.isfinite(out).all():  # no scan in fp32
                self.fp32_fallbacks += 1
                self.warn("non-finite values in reduced precision; this window was recomputed in fp32")
                clips[index] = frames_to_tensor(windows[index], self.device, torch.float32)
                outs[index] = self._in_fp32(clips[index], mirrored)
        if self.strength != 1.0:  # 1: the network's output as it is, bit for bit
            # Blended with what the network's own skip connection adds (bilinear x4, or the
            # frames for same-size models): strength 0 is that enlarged source.
            outs = [
                torch.lerp(self.model.skip(c).to(o.dtype), o, self.strength) for c, o in zip(clips, outs, strict=True)
            ]
        return outs

    def _run_fitting_memory(self, clip: Tensor, mirrored: bool = False) -> Tensor:
        while True:
            try:
                return self._run(clip, mirrored)
            except torch.cuda.OutOfMemoryError:
                if self.device.type != "cuda":
                    raise
                torch.cuda.empty_cache()
                if self.batch > 1:
                    self.batch //= 2
                    self.warn(f"out of GPU memory: retrying with --batch {self.batch}")
                    continue
                smaller = self._smaller_tile(clip.shape[-2:])
                if smaller is None:
                    raise
                self.warn(f"out of GPU memory: retrying with --tile {smaller}")
                self.tile = smaller

    def _smaller_tile(self, size: torch.Size) -> int | None:
        current = self.tile or max(size)
        smaller = max(MIN_TILE, current // 2)
        return smaller if smaller < current else None

    def _on_step(self, units: int) -> None:
        if self.cancel.is_set():
            raise CancelledError("the caller stopped waiting")
        if self.progress is not None:
            self.progress(units)

    def _run(self, clip: Tensor, mirrored: bool) -> Tensor:
        """The network on the clip, tiled as set: on the CPU in the network's own thread, where
        denormals are flushed (threads.NetworkThread), whatever thread calls."""
        work = partial(self._forward, clip, mirrored)
        return network_thread().run(work, self.cancel) if self.device.type == "cpu" else work()

    def _forward(self, clip: Tensor, mirrored: bool) -> Tensor:
        with torch.no_grad():  # (a thread's own setting: set here, in the thread that runs it)
            run = partial(self.model, mirrored=mirrored)
            return run_tiled(run, clip, self.tile, self.tile_overlap, self.scale, self.batch)

    def _in_fp32(self, clip: Tensor, mirrored: bool) -> Tensor:
        self.model = place_model(self.model, self.device, torch.float32, self.graphs)
        self.model.load_state_dict(self.fp32_state)
        try:
            return self._run_fitting_memory(clip, mirrored)
        finally:
            self.model = place_model(self.model, self.device, self.dtype, self.graphs)


class CancelledError(Exception):
    """A forward stopped because its caller was interrupted (it raises its own interruption)."""


def make_deterministic(on: bool) -> None:
    """--deterministic: the same bits from the same input in any process on the same GPU model.
    cuDNN's benchmark mode picks algorithms per process and per shape by timing them, TF32 rounds
    matmuls and convolutions to 10-bit mantissas, and some kernels accumulate in a racy order;
    off, all three (torch's reproducibility notes). cuBLAS needs its workspace fixed for the
    same, before CUDA starts. Without it: cuDNN's fastest algorithms, TF32 left as PyTorch sets it."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not on
    torch.backends.cudnn.deterministic = on
    if on:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    # torch.use_deterministic_algorithms imports torch._inductor (1.6 s of a worker's start,
    # measured on the CPU): called only when the setting changes.
    enabled = torch.are_deterministic_algorithms_enabled()
    if enabled != on or (on and not torch.is_deterministic_algorithms_warn_only_enabled()):
        torch.use_deterministic_algorithms(on, warn_only=True)


def place_model(model: BasicVSRPlusPlus, device: torch.device, dtype: torch.dtype, graphs: bool) -> BasicVSRPlusPlus:
    """The model on the device in the dtype, ready to run: its deformable-conv backend resolved
    there; on CUDA, channels-last, cuDNN's algorithm search, and fresh CUDA graphs when asked for
    (captured graphs hold the addresses of the old parameters)."""
    on_cuda = device.type == "cuda"
    memory_format = torch.channels_last if on_cuda else torch.preserve_format
    model = model.to(device=device, dtype=dtype, memory_format=memory_format).eval()
    model.resolve_deform_backend()
    model.use_cuda_graphs(graphs and on_cuda)
    return model


def compile_alignment(model: BasicVSRPlusPlus) -> None:
    """torch.compile the four alignment modules (offset convs, tanh/sigmoid, the DCN's bilinear
    gathers), where elementwise work dominates and Inductor fuses it. Measured on the CPU
    (benchmarks/RESULTS.md): bf16 at 180x320, 4.4 s a frame against 5.6 s eager, about 45 s of
    compilation, 57.5 dB against fp32; no gain in fp32. Compiled once per dtype and shape."""
    for module in model.deform_align.values():
        if not getattr(module, "compiled", False):
            module.forward = torch.compile(module.forward, dynamic=False)
            module.compiled = True


def worker_device(name: str, world: int) -> torch.device:
    """The worker's device, made current for the whole process: Triton launches and CUDA graph
    captures use the current device. A worker of several sees one GPU only (launch.py)."""
    if world > 1 and name != "cpu":
        name = "cuda:0" if torch.cuda.is_available() else "cpu"
    device = pick_device(name)
    if device.type == "cuda":
        device = torch.device("cuda", device.index or 0)
        torch.cuda.set_device(device)
    return device


def build_engine(
    options: Options, weights: Path, info: VideoInfo | None, device: torch.device, tile: int, window_frames: int,
    tell: Callable[[str], None], batch: int | None = None, model: BasicVSRPlusPlus | None = None,
) -> Engine:  # fmt: skip
    """The engine as every run sets it up from its options: the checkpoint at `weights` (this
    machine's path) with the asked deformable-conv backend, the run's precision and tiles, and
    `batch` windows per forward (None: --batch, else as many windows of `info`'s frames as fit the
    device's free memory). `model`: that checkpoint, already loaded in this process (open_run)."""
    dtype = pick_dtype(options.precision, device)
    if model is None:
        model = load_model(weights, deform_backend=options.deform_backend)
    if batch is None:
        width, height = (min(side, tile + 2 * options.tile_overlap) if tile else side
                         for side in (info.width, info.height))  # fmt: skip
        batch = options.batch or default_batch(device, width, height, model.mid_channels, window_frames,
                                               dtype.itemsize)  # fmt: skip
    return Engine(model, device, dtype, tile, options.tile_overlap, warn=tell, graphs=options.graphs, batch=batch,
                  compile=options.compile, strength=options.strength,
                  deterministic=bool(options.deterministic))  # fmt: skip
