"""Frames to tensors and back. Colour conversion of YUV planes and quantisation happen on the
tensor's device (colour.py)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .colour import Planes, YuvTarget, rgb_to_yuv, samples_to_device, yuv_to_rgb


def frames_to_tensor(frames: list[np.ndarray | Planes], device: torch.device, dtype: torch.dtype) -> Tensor:
    """(h, w, 3) uint8/uint16 RGB arrays or YUV planes -> (1, t, 3, h, w) RGB in [0, 1] on `device`."""
    return torch.stack([_rgb_of(frame, device) for frame in frames]).unsqueeze(0).to(dtype)


def _rgb_of(frame: np.ndarray | Planes, device: torch.device) -> Tensor:
    if isinstance(frame, Planes):
        return yuv_to_rgb(frame, device)
    peak = 65535.0 if frame.dtype == np.uint16 else 255.0
    return samples_to_device(frame, device).permute(2, 0, 1) / peak


def tensor_to_frames(clip: Tensor, bit_depth: int, target: YuvTarget | None = None) -> list[np.ndarray | Planes]:
    """(1, t, 3, h, w) -> t frames: in the target's YUV format when given, else (h, w, 3) RGB
    arrays, uint8, or uint16 (full 16-bit scale) for deeper sources. Clamped and rounded."""
    if target is not None:
        return rgb_to_yuv(clip[0], target)
    peak = 65535.0 if bit_depth > 8 else 255.0
    quantised = (clip[0].float().clamp(0, 1) * peak).round()
    quantised = quantised.to(torch.int32 if bit_depth > 8 else torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if bit_depth > 8:
        quantised = quantised.astype(np.uint16)
    return list(quantised)
