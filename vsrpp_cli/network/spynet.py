"""SPyNet optical flow (Ranjan and Black, CVPR 2017), as BasicVSR/BasicVSR++ use it.

Facts from docs/REFERENCE.md section 1 (upstream: mmagic basicvsr_net.py): six levels of five 7x7
convs, ImageNet-normalised inputs resized to multiples of 32, coarse-to-fine residual flow.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import flow_warp

NUM_LEVELS = 6


class ConvReLU(nn.Module):
    """One conv; the attribute name `conv` matches the official keys (`...basic_module.M.conv.weight`)."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 7, 1, 3)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return F.relu(x) if self.relu else x


class SPyNetLevel(nn.Module):
    """Refines a flow at one pyramid level: (ref 3 + warped supp 3 + flow 2) channels -> 2."""

    def __init__(self) -> None:
        super().__init__()
        widths = (8, 32, 64, 32, 16, 2)
        self.basic_module = nn.Sequential(*(ConvReLU(a, b, relu=b != 2) for a, b in itertools.pairwise(widths)))

    def forward(self, x: Tensor) -> Tensor:
        return self.basic_module(x)


class SPyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList(SPyNetLevel() for _ in range(NUM_LEVELS))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, ref: Tensor, supp: Tensor) -> Tensor:
        """Flow (n, 2, h, w) from ref to supp: flow_warp(supp, flow) lines supp up with ref."""
        n, _, h, w = ref.shape
        h_up, w_up = 32 * math.ceil(h / 32), 32 * math.ceil(w / 32)
        pair = torch.cat([ref, supp])  # one resize, normalisation and pyramid for both
        if (h_up, w_up) != (h, w):
            pair = F.interpolate(pair, size=(h_up, w_up), mode="bilinear", align_corners=False)
        flow = self._flow(pair, n)
        if (h_up, w_up) != (h, w):
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            # Python scalars, not a tensor made on the host: no copy to the device in forward.
            flow[:, 0] *= w / w_up
            flow[:, 1] *= h / h_up
        return flow

    def _flow(self, pair: Tensor, n: int) -> Tensor:
        """pair (2n, 3, h, w): the n refs, then the n supps, sizes multiples of 32."""
        pyramid = [(pair - self.mean) / self.std]
        for _ in range(NUM_LEVELS - 1):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2, 2, count_include_pad=False))
        h, w = pyramid[-1].shape[-2:]
        flow = pair.new_zeros(n, 2, h, w)  # coarsest level: h_up / 32, w_up / 32
        for level, images in enumerate(pyramid[::-1]):
            ref, supp = images[:n], images[n:]
            if level > 0:
                flow = 2 * F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True)
            warped = flow_warp(supp, flow, padding_mode="border")
            flow = flow + self.basic_module[level](torch.cat([ref, warped, flow], dim=1))
        return flow
