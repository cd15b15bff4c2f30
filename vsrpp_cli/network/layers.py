"""Building blocks shared by SPyNet and BasicVSR++ (names follow the official state_dict keys)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def flow_warp(x: Tensor, flow: Tensor, padding_mode: str = "zeros") -> Tensor:
    """Sample x (n, c, h, w) at pixel + flow (n, 2, h, w; channel 0 is x, 1 is y).

    Bilinear with align_corners=True, as upstream. The grid is kept in fp32: in fp16 a
    normalised coordinate is off by up to a quarter pixel at 960 wide.
    """
    return warp_with_grid(x, sampling_grid(flow), padding_mode)


def sampling_grid(flow: Tensor) -> Tensor:
    """flow (..., 2, h, w) in pixels -> grid_sample's grid (..., h, w, 2), normalised, fp32."""
    h, w = flow.shape[-2:]
    base, scale = _normalised_pixels(h, w, flow.device)
    return torch.addcmul(base, flow.float().movedim(-3, -1), scale)


def warp_with_grid(x: Tensor, grid: Tensor, padding_mode: str = "zeros") -> Tensor:
    warped = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return warped.to(x.dtype)


@functools.lru_cache(maxsize=32)
def _normalised_pixels(h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Pixel centres as grid_sample coordinates (h, w, 2), and pixels to coordinates (2,).
    Made once per size and device: warps then cost one fused multiply-add and the sampling."""
    to_x, to_y = 2 / max(w - 1, 1), 2 / max(h - 1, 1)
    xs = torch.arange(w, device=device, dtype=torch.float32) * to_x - 1
    ys = torch.arange(h, device=device, dtype=torch.float32) * to_y - 1
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
    scale = torch.stack([torch.full((), to_x, device=device), torch.full((), to_y, device=device)])
    return base, scale


class ResidualBlockNoBN(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class ResidualBlocksWithInputConv(nn.Module):
    """A 3x3 conv from in_channels to out_channels, LeakyReLU(0.1), then num_blocks residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, 1, 1),
            nn.LeakyReLU(0.1),
            nn.Sequential(*(ResidualBlockNoBN(out_channels) for _ in range(num_blocks))),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


class PixelShufflePack(nn.Module):
    """x2 upsampling: a conv to 4x the channels, then pixel shuffle."""

    def __init__(self, in_channels: int, out_channels: int, scale: int, kernel_size: int) -> None:
        super().__init__()
        self.scale = scale
        self.upsample_conv = nn.Conv2d(in_channels, out_channels * scale * scale, kernel_size, 1, kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(self.upsample_conv(x), self.scale)
