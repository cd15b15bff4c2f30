"""BasicVSR++ (Chan et al., CVPR 2022, arXiv 2104.13371): second-order grid propagation with
flow-guided deformable alignment.

Structure, key names and forward order follow docs/REFERENCE.md section 1 (upstream:
mmagic basicvsr_plusplus_net.py), so official OpenMMLab checkpoints load unchanged.
Shapes: n clips, t frames, C = mid_channels, (h, w) the feature size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .deform_conv import ProbeShape, modulated_deform_conv2d, resolve_backend
from .layers import PixelShufflePack, ResidualBlocksWithInputConv, flow_warp, sampling_grid, warp_with_grid
from .spynet import SPyNet

BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")
# Upstream asserts the input is at least 64x64, for SPyNet's six-level pyramid. We pad only
# SPyNet's input to it (replicate, bottom and right) and crop the flows back: the rest of the
# network runs at the frames' own size, as its convolutions run at any frame's edges (a 32x48
# frame has 0.375 of a 64x64 one's pixels, which it used to be padded to).
MIN_FLOW_SIZE = 64
MIN_FEATURE_SIZE = 2  # see padding_for
DEFORM_GROUPS = 16
# Progress: a propagation step is one unit of work and a reconstructed frame this many, so that the
# bar moves through the reconstruction rather than sitting full over it. On the CPU a frame's
# reconstruction took about 1.5 steps' time with the official C64 size (issue 28 measured 27% of a
# run after the last step) and 4 to 5 with C8/C16 (49-58% of a window of 12 frames of 96x128,
# timed by hand with the engine's progress hook).
RECONSTRUCTION_UNITS = 2

# Reconstruction and upsampling run on batches of frames: about 3,000 values live per input
# pixel of a frame at the peak (upsample2's input, its conv output and the shuffled result).
RECONSTRUCT_ELEMENTS_PER_PIXEL = 3072
RECONSTRUCT_BYTES = 2**31


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

    def forward(self, x: Tensor, cond: Tensor, offset_flows: Tensor) -> Tensor:
        # x: (n, 2C, h, w) [feat_prop, feat_n2]; cond: (n, 3C + 4, h, w);
        # offset_flows: (n, 2, 1, 2, h, w) fp32, flow_n1 and flow_n2 as (dy, dx) -> (n, C, h, w)
        out = self.conv_offset(cond)  # (n, 27 * 16, h, w): residues for n1, for n2, then the mask
        n, _, h, w = out.shape
        residues = torch.tanh(out[:, : 2 * 9 * DEFORM_GROUPS]).reshape(n, 2, -1, 2, h, w)
        # Offsets are (dy, dx) pairs per group and tap on top of the flow; fp32 (flows add
        # hundreds of pixels), broadcast over the groups and taps.
        offset = torch.add(offset_flows, residues, alpha=self.max_residue_magnitude).reshape(n, -1, h, w)
        mask = torch.sigmoid(out[:, 2 * 9 * DEFORM_GROUPS :])
        args = (x, offset, mask, self.weight, self.bias)
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
        hr_channels: int = 64,
    ) -> None:
        super().__init__()
        self.mid_channels = mid_channels
        self.num_blocks = num_blocks
        # The width of the full-size convolutions: 64 in upstream's network and every published
        # checkpoint (fixed there, whatever C). Smaller only in small networks (the tests'), where
        # these convs at 2x and 4x size are ~40% of a C8 forward (RESULTS 2026-12-07, thirteenth).
        self.hr_channels = hr_channels
        self.is_low_res_input = is_low_res_input
        self.deform_backend = deform_backend  # as asked: "auto" or a name
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
        self.upsample2 = PixelShufflePack(C, hr_channels, 2, 3)
        self.conv_hr = nn.Conv2d(hr_channels, hr_channels, 3, 1, 1)
        self.conv_last = nn.Conv2d(hr_channels, 3, 3, 1, 1)
        self.step_runners: dict[str, tuple[Callable[..., Tensor], Callable[..., Tensor]]] | None = None
        # Called after every propagation step (len(BRANCHES) * t per forward), for progress
        # bars; it is handed nothing from the device, so it never waits for the GPU.
        self.on_step: Callable[[int], None] | None = None  # hears units of work done (progress)

    @property
    def scale(self) -> int:
        return 4 if self.is_low_res_input else 1

    def resolve_deform_backend(self) -> str:
        """Probe now, and use from now on, the concrete deformable-conv backend that the asked-for
        one means on the model's device and dtype (never inside a forward, where a probe would
        stall a CUDA graph capture). Call again after changing the device or dtype."""
        weight = self.deform_align[BRANCHES[0]].weight  # (C, 2C, 3, 3), 16 groups: probed at these sizes
        shape = ProbeShape(weight.shape[1], DEFORM_GROUPS, weight.shape[0])
        name = resolve_backend(self.deform_backend, weight.device, weight.dtype, shape)
        for module in self.deform_align.values():
            module.backend = name
        return name

    def use_cuda_graphs(self, enabled: bool = True) -> None:
        """Replay the propagation steps as CUDA graphs (graphs.py). Call again after changing
        the model's device or dtype: graphs hold the addresses of the parameters they saw."""
        from .graphs import graphed_steps

        self.step_runners = graphed_steps(self) if enabled else None

    def forward(self, lqs: Tensor, mirrored: bool = False) -> Tensor:
        """Pads frames the network cannot take as they are (padding_for), then crops the output back.

        `mirrored`: the caller built the clip so that its second half is the first reversed
        (Vimeo-90K-T's extension); the forward flows are then the backward ones reversed. The
        caller says so because checking would read the frames back to the host.
        """
        n, t, c, h, w = lqs.shape
        pad_h, pad_w = self.padding_for(h, w)
        if pad_h or pad_w:
            padded = F.pad(lqs.reshape(n * t, c, h, w), (0, pad_w, 0, pad_h), mode="replicate")
            lqs = padded.view(n, t, c, h + pad_h, w + pad_w)
            return self._forward(lqs, mirrored)[..., : h * self.scale, : w * self.scale]
        return self._forward(lqs, mirrored)

    def padding_for(self, h: int, w: int) -> tuple[int, int]:
        """Rows and columns to add at the bottom and right so that (h, w) is a valid input:
        features at least 2x2 (grid_sample, which warps and the plain deformable conv use,
        cannot place a sample between the pixels of a one-pixel-wide image: it takes all at
        that pixel), and for same-size models a multiple of 4, their features being a quarter
        of the frame (two stride-2 convs). SPyNet's minimum is compute_flows' to meet."""
        if self.is_low_res_input:
            return max(MIN_FEATURE_SIZE - h, 0), max(MIN_FEATURE_SIZE - w, 0)
        return max(4 * MIN_FEATURE_SIZE, -(-h // 4) * 4) - h, max(4 * MIN_FEATURE_SIZE, -(-w // 4) * 4) - w

    def _forward(self, lqs: Tensor, mirrored: bool) -> Tensor:
        # Everything that does not depend on the recurrence runs batched over frames, before
        # (features, flows, grids) or after (reconstruction) the strictly sequential loop.
        n, t, c, h, w = lqs.shape
        frames = lqs.reshape(n * t, c, h, w)
        if self.is_low_res_input:
            flow_input = lqs
        else:
            flow_input = F.interpolate(frames, scale_factor=0.25, mode="bicubic").view(n, t, c, h // 4, w // 4)

        if frames.device.type == "cpu":  # one frame at a time: see reconstruct()
            spatial = torch.cat([self.feat_extract(frame) for frame in frames.split(1)])
        else:
            spatial = self.feat_extract(frames)
        spatial = spatial.view(n, t, *spatial.shape[1:])  # (n, t, C, h', w')
        feats = {"spatial": list(spatial.unbind(1))}
        if t == 1:
            plans = {"backward": None, "forward": None}
        else:
            flows_backward, flows_forward = self.compute_flows(flow_input, mirrored)
            # Walk order: the flow at step s leads from frame i to the previous step's frame.
            plans = {
                "backward": AlignmentPlan.from_walk_flows(flows_backward.flip(1)),
                "forward": AlignmentPlan.from_walk_flows(flows_forward),
            }
        for name in BRANCHES:
            feats[name] = self.propagate(feats, plans[name.split("_")[0]], name)
        return self.reconstruct(lqs, feats)

    def compute_flows(self, frames: Tensor, mirrored: bool) -> tuple[Tensor, Tensor]:
        """frames (n, t, 3, h, w) -> backward flows (frame i to i+1) and forward flows (i+1 to i),
        each (n, t-1, 2, h, w). One SPyNet pass computes both directions, on frames padded to
        MIN_FLOW_SIZE where smaller; the flows are cropped back."""
        n, t, c, h, w = frames.shape
        pad_h, pad_w = max(MIN_FLOW_SIZE - h, 0), max(MIN_FLOW_SIZE - w, 0)
        if pad_h or pad_w:
            padded = F.pad(frames.reshape(n * t, c, h, w), (0, pad_w, 0, pad_h), mode="replicate")
            backward, forward = self.compute_flows(padded.view(n, t, c, h + pad_h, w + pad_w), mirrored)
            return backward[..., :h, :w], forward[..., :h, :w]
        current = frames[:, :-1].reshape(-1, c, h, w)
        following = frames[:, 1:].reshape(-1, c, h, w)
        if mirrored:  # the second half is the first reversed: its flows are ours reversed
            flows_backward = self.spynet(current, following).view(n, t - 1, 2, h, w)
            return flows_backward, flows_backward.flip(1)
        flows = self.spynet(torch.cat([current, following]), torch.cat([following, current]))
        flows_backward, flows_forward = flows.view(2, n, t - 1, 2, h, w).unbind(0)
        return flows_backward, flows_forward

    def propagate(self, feats: dict[str, list[Tensor]], plan: AlignmentPlan | None, name: str) -> list[Tensor]:
        """One propagation branch over all frames; returns its features in time order."""
        t = len(feats["spatial"])
        backward = name.startswith("backward")
        order = range(t - 1, -1, -1) if backward else range(t)
        earlier_branches = [feats[k] for k in BRANCHES if k in feats]
        first_step, aligned_step = self.steps[name]
        outputs: list[Tensor] = []  # in walk order
        for step, i in enumerate(order):
            context = [feats["spatial"][i], *(branch[i] for branch in earlier_branches)]
            if step == 0:
                feat_prop = first_step(*context)
            else:
                # Step 1 has no second-order neighbour: zeros, whose warp is zeros too.
                feat_n2 = outputs[-2] if step > 1 else torch.zeros_like(feat_prop)
                grids, flows, offset_flows = plan.step(step)
                feat_prop = aligned_step(feat_prop, feat_n2, grids, flows, offset_flows, *context)
            outputs.append(feat_prop)
            if self.on_step is not None:
                self.on_step(1)
        return outputs[::-1] if backward else outputs

    @property
    def steps(self) -> dict[str, tuple[Callable[..., Tensor], Callable[..., Tensor]]]:
        """Per branch, the first step and the aligned steps, as functions of tensors only: what
        a CUDA graph captures (graphs.py)."""
        if self.step_runners is not None:
            return self.step_runners
        return {name: (partial(self.first_step, name), partial(self.aligned_step, name)) for name in BRANCHES}

    def first_step(self, name: str, *context: Tensor) -> Tensor:
        """No earlier frame: the state starts at zeros and is not aligned."""
        zeros = torch.zeros_like(context[0])
        return self.backbone[name](torch.cat([*context, zeros], dim=1))  # zeros + residual

    def aligned_step(
        self,
        name: str,
        feat_prop: Tensor,  # (n, C, h, w): this branch at the previous step's frame
        feat_n2: Tensor,  # (n, C, h, w): two steps back (zeros at step 1)
        grids: Tensor,  # (n, 2, h, w, 2): where flow_n1 and flow_n2 sample
        flows: Tensor,  # (n, 4, h, w): flow_n1 and flow_n2
        offset_flows: Tensor,  # (n, 2, 1, 2, h, w): the same as (dy, dx)
        *context: Tensor,  # spatial features, then the earlier branches at this frame
    ) -> Tensor:
        cond_n1 = warp_with_grid(feat_prop, grids[:, 0])
        cond_n2 = warp_with_grid(feat_n2, grids[:, 1])
        aligned = self.deform_align[name](
            torch.cat([feat_prop, feat_n2], dim=1),  # the DCN samples the unwarped features
            torch.cat([cond_n1, context[0], cond_n2, flows], dim=1),
            offset_flows,
        )
        return aligned + self.backbone[name](torch.cat([*context, aligned], dim=1))

    def skip(self, frames: Tensor) -> Tensor:
        """What the output adds to the learned residual: the frames enlarged bilinearly (x4), or
        the frames themselves (same-size models). (..., c, h, w) -> (..., c, 4h, 4w) or as given."""
        if not self.is_low_res_input:
            return frames
        *lead, c, h, w = frames.shape
        enlarged = F.interpolate(frames.reshape(-1, c, h, w), scale_factor=4, mode="bilinear", align_corners=False)
        return enlarged.view(*lead, c, 4 * h, 4 * w)

    def reconstruct(self, lqs: Tensor, feats: dict[str, list[Tensor]]) -> Tensor:
        """All frames from the spatial and four branch features (5C channels) plus the skip, in
        batches of frames as large as RECONSTRUCT_BYTES allows on a GPU, one by one on the CPU."""
        n, t, c, h, w = lqs.shape
        feat_h, feat_w = feats["spatial"][0].shape[-2:]
        per_frame = RECONSTRUCT_ELEMENTS_PER_PIXEL * n * feat_h * feat_w * lqs.element_size()
        batch = max(1, min(t, RECONSTRUCT_BYTES // per_frame))
        if lqs.device.type == "cpu":
            # oneDNN ran these convs up to 2x slower per frame on batches of frames than one frame
            # at a time (180x320, 2 cores: the batch outgrows the cache); launches cost little here.
            batch = 1
        outputs = []
        for start in range(0, t, batch):
            stop = min(t, start + batch)
            # One cat, frame-major in channels: (n, B * 5C, h, w) is (n * B, 5C, h, w).
            parts = [feats[k][i] for i in range(start, stop) for k in ("spatial", *BRANCHES)]
            hr = self.reconstruction(torch.cat(parts, dim=1).view(n * (stop - start), -1, feat_h, feat_w))
            hr = F.leaky_relu(self.upsample1(hr), 0.1)
            hr = F.leaky_relu(self.upsample2(hr), 0.1)
            hr = F.leaky_relu(self.conv_hr(hr), 0.1)
            hr = self.conv_last(hr) + self.skip(lqs[:, start:stop].reshape(-1, c, h, w))
            outputs.append(hr.view(n, stop - start, *hr.shape[1:]))
            if self.on_step is not None:
                self.on_step(RECONSTRUCTION_UNITS * (stop - start))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)


@dataclass
class AlignmentPlan:
    """What every aligned step of one direction needs from the flows, computed for all steps at
    once before the loop. Index s - 1 holds step s (steps 1 .. t-1)."""

    grids: Tensor  # (t-1, n, 2, h, w, 2) fp32: grid_sample grids of flow_n1 and flow_n2
    flows: Tensor  # (t-1, n, 4, h, w): flow_n1 (x, y) and flow_n2 (x, y), the offset head's input
    offset_flows: Tensor  # (t-1, n, 2, 1, 2, h, w) fp32: flow_n1 and flow_n2 as (dy, dx)

    @classmethod
    def from_walk_flows(cls, walk_flows: Tensor) -> AlignmentPlan:
        """walk_flows (n, t-1, 2, h, w): at index s - 1, the flow from step s's frame to step
        s - 1's. The second-order flow reaches two steps back: flow_n1 + warp(the previous
        step's flow_n1, flow_n1); zeros at step 1."""
        flow_n1 = walk_flows.float().transpose(0, 1)  # (t-1, n, 2, h, w)
        steps, n, _, h, w = flow_n1.shape
        flow_n2 = torch.zeros_like(flow_n1)
        if steps > 1:
            later, earlier = flow_n1[1:].flatten(0, 1), flow_n1[:-1].flatten(0, 1)
            flow_n2[1:] = (later + flow_warp(earlier, later)).view(steps - 1, n, 2, h, w)
        flows = torch.cat([flow_n1, flow_n2], dim=2)  # (t-1, n, 4, h, w)
        pairs = flows.view(steps, n, 2, 2, h, w)
        return cls(sampling_grid(pairs), flows.to(walk_flows.dtype), pairs.flip(3).unsqueeze(3))

    def step(self, step: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.grids[step - 1], self.flows[step - 1], self.offset_flows[step - 1]
