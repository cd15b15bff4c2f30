"""Running the network on one window: device, precision, tiles, and the ways that goes wrong
(out of memory, NaN/Inf in reduced precision) handled without losing a frame."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .colour import Planes, YuvTarget
from .network import BasicVSRPlusPlus
from .tensors import frames_to_tensor, tensor_to_frames
from .windows import run_tiled

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MIN_TILE = 64


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return device


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision}: choose auto, fp32, fp16 or bf16")
    return PRECISIONS[precision]


class Engine:
    """Turns a window of frames (RGB or YUV) into upscaled frames (RGB, or YUV for an encoder)."""

    def __init__(
        self,
        model: BasicVSRPlusPlus,
        device: torch.device,
        dtype: torch.dtype,
        tile: int = 0,
        tile_overlap: int = 16,
        warn: Callable[[str], None] = lambda message: None,
    ) -> None:
        # Full-precision weights stay on the host for windows that must be recomputed in fp32.
        self.fp32_state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device, self.dtype = device, dtype
        self.tile, self.tile_overlap = tile, tile_overlap
        self.warn = warn
        self.fp32_fallbacks = 0

    @property
    def scale(self) -> int:
        return self.model.scale

    def upscale(
        self, frames: list[np.ndarray | Planes], keep: slice, bit_depth: int, target: YuvTarget | None = None
    ) -> list[np.ndarray | Planes]:
        """Run the whole window, return only its kept frames, converted and quantised on the device."""
        return tensor_to_frames(self.infer(frames)[:, keep], bit_depth, target)

    def infer(self, frames: list[np.ndarray | Planes]) -> Tensor:
        """The network's output (1, t, 3, sh, sw) for a window, unclamped, always finite."""
        out = self._run_fitting_memory(frames_to_tensor(frames, self.device, self.dtype))
        if self.dtype != torch.float32 and not torch.isfinite(out).all():  # no scan in fp32
            self.fp32_fallbacks += 1
            self.warn("non-finite values in reduced precision; this window was recomputed in fp32")
            out = self._in_fp32(frames_to_tensor(frames, self.device, torch.float32))
        return out

    def _run_fitting_memory(self, clip: Tensor) -> Tensor:
        while True:
            try:
                return self._run(clip)
            except torch.cuda.OutOfMemoryError:
                if self.device.type != "cuda":
                    raise
                torch.cuda.empty_cache()
                smaller = self._smaller_tile(clip.shape[-2:])
                if smaller is None:
                    raise
                self.warn(f"out of GPU memory: retrying with --tile {smaller}")
                self.tile = smaller

    def _smaller_tile(self, size: torch.Size) -> int | None:
        current = self.tile or max(size)
        smaller = max(MIN_TILE, current // 2)
        return smaller if smaller < current else None

    @torch.no_grad()
    def _run(self, clip: Tensor) -> Tensor:
        return run_tiled(self.model, clip, self.tile, self.tile_overlap, self.scale)

    def _in_fp32(self, clip: Tensor) -> Tensor:
        self.model.float().load_state_dict(self.fp32_state)
        try:
            return self._run_fitting_memory(clip)
        finally:
            self.model.to(self.dtype)
