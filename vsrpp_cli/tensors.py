"""Frames to tensors and back. Quantisation happens on the tensor's device."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def frames_to_tensor(frames: list[np.ndarray], device: torch.device, dtype: torch.dtype) -> Tensor:
    """(t, h, w, 3) uint8/uint16 arrays -> (1, t, 3, h, w) in [0, 1], converted on `device`."""
    stacked = np.stack(frames)
    peak = 65535.0 if stacked.dtype == np.uint16 else 255.0
    if stacked.dtype == np.uint16:  # torch has no uint16 arithmetic on every device
        stacked = stacked.astype(np.int32)
    raw = torch.from_numpy(stacked).to(device, non_blocking=True)
    return (raw.permute(0, 3, 1, 2).unsqueeze(0).float() / peak).to(dtype)


def tensor_to_frames(clip: Tensor, bit_depth: int) -> list[np.ndarray]:
    """(1, t, 3, h, w) -> t arrays (h, w, 3): clamped, rounded, uint8 or uint16 (full 16-bit scale)."""
    peak = 65535.0 if bit_depth > 8 else 255.0
    quantised = (clip[0].float().clamp(0, 1) * peak).round()
    quantised = quantised.to(torch.int32 if bit_depth > 8 else torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if bit_depth > 8:
        quantised = quantised.astype(np.uint16)
    return list(quantised)
