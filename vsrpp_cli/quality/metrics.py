"""PSNR and SSIM as the video super-resolution papers compute them (docs/REFERENCE.md section 4).

Images are 8-bit values (0 to 255) held as arrays (h, w, 3), RGB. On the Y channel they are
first turned into ITU-R BT.601 luma, 16 to 235, unrounded. SSIM (Wang et al., 2004): 11x11
Gaussian window, sigma 1.5, K1 0.01, K2 0.03, L 255, over the valid region only, per channel,
averaged over channels.
"""

from __future__ import annotations

import math

import numpy as np
import torch

PEAK = 255.0


def to_y(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) 0-255 RGB -> (h, w, 1) BT.601 luma in 16-235."""
    r, g, b = (rgb[..., i].astype(np.float64) / PEAK for i in range(3))
    return (16.0 + 65.481 * r + 128.553 * g + 24.966 * b)[..., None]


def prepare(image: np.ndarray, y_channel: bool, crop_border: int = 0) -> np.ndarray:
    image = to_y(image) if y_channel else image.astype(np.float64)
    if crop_border:
        image = image[crop_border:-crop_border, crop_border:-crop_border]
    return image


def psnr(output: np.ndarray, gt: np.ndarray, y_channel: bool = False, crop_border: int = 0) -> float:
    a, b = prepare(output, y_channel, crop_border), prepare(gt, y_channel, crop_border)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(PEAK**2 / mse)


def ssim(output: np.ndarray, gt: np.ndarray, y_channel: bool = False, crop_border: int = 0) -> float:
    a, b = prepare(output, y_channel, crop_border), prepare(gt, y_channel, crop_border)
    x = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))  # (channels, h, w), float64
    y = torch.from_numpy(np.ascontiguousarray(b.transpose(2, 0, 1)))
    c1, c2 = (0.01 * PEAK) ** 2, (0.03 * PEAK) ** 2
    mu_x, mu_y, xx, yy, xy = blur(torch.cat([x, y, x * x, y * y, x * y])).chunk(5)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean(dim=(1, 2)).mean())  # per channel, then over channels


def gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    return g / g.sum()


def blur(planes: torch.Tensor) -> torch.Tensor:
    """(n, h, w) -> (n, h - 10, w - 10): the Gaussian-weighted mean of every 11x11 window that fits
    ('valid', as the protocol crops). The 2-D window is the outer product of a 1-D Gaussian, so
    rows then columns: 22 products a pixel instead of 121, as matrix products (PyTorch's float64
    convolution takes a slow path: `python benchmarks/ssim_speed.py 720 1280`, 5.8 s against 0.8 s
    on 2 cores, benchmarks/RESULTS.md)."""
    g = gaussian()
    return (planes.unfold(-1, g.numel(), 1) @ g).unfold(-2, g.numel(), 1) @ g
