"""BasicVSR++ (Chan et al., CVPR 2022, arXiv 2104.13371): second-order grid propagation with
flow-guided deformable alignment.

Structure, key names and forward order follow REFERENCE.md section 1 (upstream:
mmagic basicvsr_plusplus_net.py), so official OpenMMLab checkpoints load unchanged.
Shapes: n clips, t frames, C = mid_channels, (h, w) the feature size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .deform_conv import modulated_deform_conv2d
from .layers import PixelShufflePack, ResidualBlocksWithInputConv, flow_warp
from .spynet import SPyNet

BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")
MIN_FLOW_SIZE = 64  # upstream asserts the SPyNet input is at least 64x64; we pad instead
DEFORM_GROUPS = 16


class SecondOrderDeformableAlignment(nn.Module):
    """DCNv2 over [feat_prop, feat_n2] whose offsets are residues on top of the optical flows."""

    def __init__(self, channels: int, max_residue_magnitude: float, backend: str = "auto") -> None:
        super().__init__()
        self.max_residue_magnitude = max_residue_magnitude
        self.backend = backend
        self.weight = nn.Parameter(torch.empty(channels, 2 * channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.conv_offset = nn.Sequential(
            nn.Conv2d(3 * channels + 4, channels, 3, 1, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, 27 * DEFORM_GROUPS, 3, 1, 1),
        )
        # Upstream starts the offset head at zero, so training begins from pure flow warping.
        nn.init.zeros_(self.conv_offset[-1].weight)
        nn.init.zeros_(self.conv_offset[-1].bias)

    def forward(self, x: Tensor, cond: Tensor, flow_n1: Tensor, flow_n2: Tensor) -> Tensor:
        # x: (n, 2C, h, w); cond: (n, 3C, h, w); flows: (n, 2, h, w) -> (n, C, h, w)
        out = self.conv_offset(torch.cat([cond, flow_n1, flow_n2], dim=1))
        o1, o2, mask = out.chunk(3, dim=1)  # 144 channels each
        residue = self.max_residue_magnitude * torch.tanh(torch.cat([o1, o2], dim=1))
        residue_n1, residue_n2 = residue.chunk(2, dim=1)
        # Offsets are (dy, dx) pairs per tap and group; flows are (x, y), hence the flip.
        repeats = residue_n1.shape[1] // 2
        offset_n1 = residue_n1 + flow_n1.flip(1).repeat(1, repeats, 1, 1)
        offset_n2 = residue_n2 + flow_n2.flip(1).repeat(1, repeats, 1, 1)
        offset = torch.cat([offset_n1, offset_n2], dim=1)
        args = (x, offset, torch.sigmoid(mask), self.weight, self.bias)
        if torch.is_grad_enabled():
            # Training: keep only the inputs and sample again in backward. Saving the gathered
            # columns instead costs ~100 MB per call at 64x64, 12 GB for one 30-frame clip.
            return checkpoint(self._deform_conv, *args, use_reentrant=False)
        return self._deform_conv(*args)

    def _deform_conv(self, x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        return modulated_deform_conv2d(x, offset, mask, weight, bias, padding=1, backend=self.backend)


class BasicVSRPlusPlus(nn.Module):
    """Input (n, t, 3, h, w) RGB in [0, 1]; output (n, t, 3, 4h, 4w), or (n, t, 3, h, w) when
    is_low_res_input=False (the restoration models). No clamp, as upstream."""

    def __init__(
        self,
        mid_channels: int = 64,
        num_blocks: int = 7,
        max_residue_magnitude: float = 10,
        is_low_res_input: bool = True,
        deform_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.mid_channels = mid_channels
        self.num_blocks = num_blocks
        self.is_low_res_input = is_low_res_input
        C = mid_channels

        self.spynet = SPyNet()
        if is_low_res_input:
            self.feat_extract = ResidualBlocksWithInputConv(3, C, 5)
        else:  # features at a quarter of the frame size
            self.feat_extract = nn.Sequential(
                nn.Conv2d(3, C, 3, 2, 1),
                nn.LeakyReLU(0.1),
                nn.Conv2d(C, C, 3, 2, 1),
                nn.LeakyReLU(0.1),
                ResidualBlocksWithInputConv(C, C, 5),
            )
        self.deform_align = nn.ModuleDict()
        self.backbone = nn.ModuleDict()
        for i, name in enumerate(BRANCHES):
            self.deform_align[name] = SecondOrderDeformableAlignment(C, max_residue_magnitude, deform_backend)
            # input: spatial features, the i branches before this one, and this branch's state
            self.backbone[name] = ResidualBlocksWithInputConv((2 + i) * C, C, num_blocks)
        self.reconstruction = ResidualBlocksWithInputConv(5 * C, C, 5)
        self.upsample1 = PixelShufflePack(C, C, 2, 3)
        self.upsample2 = PixelShufflePack(C, 64, 2, 3)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)

    @property
    def scale(self) -> int:
        return 4 if self.is_low_res_input else 1

    def set_deform_backend(self, backend: str) -> None:
        for module in self.deform_align.values():
            module.backend = backend

    def forward(self, lqs: Tensor) -> Tensor:
        """Pads frames the network cannot take as they are, then crops the output back."""
        n, t, c, h, w = lqs.shape
        pad_h, pad_w = self.padding_for(h, w)
        if pad_h or pad_w:
            padded = F.pad(lqs.reshape(n * t, c, h, w), (0, pad_w, 0, pad_h), mode="replicate")
            lqs = padded.view(n, t, c, h + pad_h, w + pad_w)
        out = self._forward(lqs)
        return out[..., : h * self.scale, : w * self.scale]

    def padding_for(self, h: int, w: int) -> tuple[int, int]:
        """Rows and columns to add at the bottom and right so that (h, w) is a valid input."""
        if self.is_low_res_input:  # SPyNet sees the frames themselves
            return max(MIN_FLOW_SIZE - h, 0), max(MIN_FLOW_SIZE - w, 0)
        # Same-size models see features and flows at a quarter of the frame size.
        min_size = 4 * MIN_FLOW_SIZE
        return max(min_size, -(-h // 4) * 4) - h, max(min_size, -(-w // 4) * 4) - w

    def _forward(self, lqs: Tensor) -> Tensor:
        n, t, c, h, w = lqs.shape
        frames = lqs.reshape(n * t, c, h, w)
        if self.is_low_res_input:
            flow_input = lqs
        else:
            flow_input = F.interpolate(frames, scale_factor=0.25, mode="bicubic").view(n, t, c, h // 4, w // 4)

        spatial = self.feat_extract(frames)  # (n*t, C, h', w')
        feats = {"spatial": list(spatial.view(n, t, *spatial.shape[1:]).unbind(1))}
        flows_backward, flows_forward = self.compute_flows(flow_input, is_mirror_extended(lqs))
        for name in BRANCHES:
            flows = flows_backward if name.startswith("backward") else flows_forward
            feats[name] = self.propagate(feats, flows, name)
        return torch.stack([self.reconstruct(lqs[:, i], feats, i) for i in range(t)], dim=1)

    def compute_flows(self, frames: Tensor, mirror: bool) -> tuple[Tensor, Tensor]:
        """frames (n, t, 3, h, w) -> backward flows (frame i to i+1) and forward flows (i+1 to i),
        each (n, t-1, 2, h, w)."""
        n, t, c, h, w = frames.shape
        current = frames[:, :-1].reshape(-1, c, h, w)
        following = frames[:, 1:].reshape(-1, c, h, w)
        flows_backward = self.spynet(current, following).view(n, t - 1, 2, h, w)
        if mirror:  # the second half is the first reversed: its flows are ours reversed
            flows_forward = flows_backward.flip(1)
        else:
            flows_forward = self.spynet(following, current).view(n, t - 1, 2, h, w)
        return flows_backward, flows_forward

    def propagate(self, feats: dict[str, list[Tensor]], flows: Tensor, name: str) -> list[Tensor]:
        """One propagation branch over all frames; returns its features in time order."""
        t = len(feats["spatial"])
        backward = name.startswith("backward")
        order = range(t - 1, -1, -1) if backward else range(t)
        earlier_branches = [feats[k] for k in BRANCHES if k in feats]
        outputs: list[Tensor] = []  # in walk order
        feat_prop = flows.new_zeros(flows.shape[0], self.mid_channels, *flows.shape[-2:])
        for step, i in enumerate(order):
            spatial = feats["spatial"][i]
            if step > 0:
                # flow from frame i to the frame of the previous step (and of the one before)
                flow_n1 = flows[:, i] if backward else flows[:, i - 1]
                cond_n1 = flow_warp(feat_prop, flow_n1)
                if step > 1:
                    feat_n2 = outputs[-2]
                    flow_prev = flows[:, i + 1] if backward else flows[:, i - 2]
                    flow_n2 = flow_n1 + flow_warp(flow_prev, flow_n1)
                    cond_n2 = flow_warp(feat_n2, flow_n2)
                else:
                    feat_n2, flow_n2, cond_n2 = (torch.zeros_like(v) for v in (feat_prop, flow_n1, cond_n1))
                feat_prop = self.deform_align[name](
                    torch.cat([feat_prop, feat_n2], dim=1),  # the DCN samples the unwarped features
                    torch.cat([cond_n1, spatial, cond_n2], dim=1),
                    flow_n1,
                    flow_n2,
                )
            aggregated = torch.cat([spatial, *(branch[i] for branch in earlier_branches), feat_prop], dim=1)
            feat_prop = feat_prop + self.backbone[name](aggregated)
            outputs.append(feat_prop)
        return outputs[::-1] if backward else outputs

    def reconstruct(self, lq: Tensor, feats: dict[str, list[Tensor]], i: int) -> Tensor:
        """Frame i from the spatial and four branch features (5C channels) plus the skip."""
        hr = self.reconstruction(torch.cat([feats[k][i] for k in ("spatial", *BRANCHES)], dim=1))
        hr = F.leaky_relu(self.upsample1(hr), 0.1)
        hr = F.leaky_relu(self.upsample2(hr), 0.1)
        hr = F.leaky_relu(self.conv_hr(hr), 0.1)
        hr = self.conv_last(hr)
        if self.is_low_res_input:
            return hr + F.interpolate(lq, scale_factor=4, mode="bilinear", align_corners=False)
        return hr + lq


def is_mirror_extended(lqs: Tensor) -> bool:
    """True when t is even and the second half of the clip is the first half reversed."""
    t = lqs.shape[1]
    return t % 2 == 0 and torch.equal(lqs[:, : t // 2], lqs[:, t // 2 :].flip(1))
