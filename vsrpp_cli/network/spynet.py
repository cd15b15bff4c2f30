"""SPyNet optical flow (Ranjan and Black, CVPR 2017), as BasicVSR/BasicVSR++ use it.

Facts from REFERENCE.md section 1 (upstream: mmagic basicvsr_net.py): six levels of five 7x7
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
        h, w = ref.shape[-2:]
        h_up, w_up = 32 * math.ceil(h / 32), 32 * math.ceil(w / 32)
        ref = F.interpolate(ref, size=(h_up, w_up), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(h_up, w_up), mode="bilinear", align_corners=False)
        flow = F.interpolate(self._flow(ref, supp), size=(h, w), mode="bilinear", align_corners=False)
        scale = torch.tensor([w / w_up, h / h_up], device=flow.device, dtype=flow.dtype)
        return flow * scale.view(1, 2, 1, 1)

    def _flow(self, ref: Tensor, supp: Tensor) -> Tensor:
        refs, supps = [(ref - self.mean) / self.std], [(supp - self.mean) / self.std]
        for _ in range(NUM_LEVELS - 1):
            refs.append(F.avg_pool2d(refs[-1], 2, 2, count_include_pad=False))
            supps.append(F.avg_pool2d(supps[-1], 2, 2, count_include_pad=False))
        n, _, h, w = refs[-1].shape
        flow = ref.new_zeros(n, 2, h, w)  # coarsest level: h_up / 32, w_up / 32
        for level, (ref_l, supp_l) in enumerate(zip(refs[::-1], supps[::-1], strict=True)):
            if level > 0:
                flow = 2 * F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True)
            warped = flow_warp(supp_l, flow, padding_mode="border")
            flow = flow + self.basic_module[level](torch.cat([ref_l, warped, flow], dim=1))
        return flow
