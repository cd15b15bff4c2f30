"""Building blocks shared by SPyNet and BasicVSR++ (names follow the official state_dict keys)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def flow_warp(x: Tensor, flow: Tensor, padding_mode: str = "zeros") -> Tensor:
    """Sample x (n, c, h, w) at pixel + flow (n, 2, h, w; channel 0 is x, 1 is y).

    Bilinear with align_corners=True, as upstream. The grid is built on x's device and kept in
    fp32: in fp16 a normalised coordinate is off by up to a quarter pixel at 960 wide.
    """
    h, w = x.shape[2:]
    ys = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w)
    flow = flow.float()
    grid_x = 2 * (xs + flow[:, 0]) / max(w - 1, 1) - 1
    grid_y = 2 * (ys + flow[:, 1]) / max(h - 1, 1) - 1
    grid = torch.stack((grid_x, grid_y), dim=-1)  # (n, h, w, 2)
    warped = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return warped.to(x.dtype)


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
