"""BasicVSR++ the plain way, for `vsrpp bench` to measure ours against: the forward as the paper
(arXiv 2104.13371, section 3) and mmagic's basicvsr_plusplus_net.py lay it out (docs/REFERENCE.md
section 1), frame by frame, written apart from basicvsrpp.py so that it shares none of its
shortcuts: flows and second-order flows computed inside the loop at each step, a warp per use,
the deformable conv as a bilinear sample per kernel tap and one matmul, reconstruction one frame
at a time. It reads the same state_dict (official key names) and runs in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")


class PlainBasicVSRPlusPlus:
    """Callable on (n, t, 3, h, w) frames in [0, 1]; the network's output (n, t, 3, sh, sw)."""

    def __init__(self, state_dict: dict[str, Tensor]) -> None:
        self.sd = {k: v.float() for k, v in state_dict.items()}
        self.x4 = "feat_extract.main.0.weight" in self.sd
        self.mid = self.sd["deform_align.backward_1.bias"].shape[0]

    def to(self, device: torch.device) -> PlainBasicVSRPlusPlus:
        self.sd = {k: v.to(device) for k, v in self.sd.items()}
        return self

    def conv(self, name: str, x: Tensor, stride: int = 1) -> Tensor:
        weight = self.sd[f"{name}.weight"]
        return F.conv2d(x, weight, self.sd[f"{name}.bias"], stride=stride, padding=weight.shape[-1] // 2)

    def residual_blocks(self, name: str, x: Tensor) -> Tensor:
        x = F.leaky_relu(self.conv(f"{name}.main.0", x), 0.1)
        block = 0
        while f"{name}.main.2.{block}.conv1.weight" in self.sd:
            x = x + self.conv(f"{name}.main.2.{block}.conv2", F.relu(self.conv(f"{name}.main.2.{block}.conv1", x)))
            block += 1
        return x

    @staticmethod
    def warp(x: Tensor, flow: Tensor, padding_mode: str = "zeros") -> Tensor:
        """x sampled at (pixel + flow), flow (n, 2, h, w) with channel 0 horizontal."""
        h, w = x.shape[-2:]
        gy, gx = torch.meshgrid(
            torch.arange(h, device=x.device, dtype=x.dtype),
            torch.arange(w, device=x.device, dtype=x.dtype),
            indexing="ij",
        )
        grid_x = 2 * (gx + flow[:, 0]) / max(w - 1, 1) - 1
        grid_y = 2 * (gy + flow[:, 1]) / max(h - 1, 1) - 1
        return F.grid_sample(x, torch.stack([grid_x, grid_y], 3), "bilinear", padding_mode, align_corners=True)

    def spynet(self, ref: Tensor, supp: Tensor) -> Tensor:
        """Flow from ref to supp: a six-level pyramid on frames resized up to multiples of 32, and
        padded to 64x64 first where smaller (replicate; the flow is cropped back)."""
        h, w = ref.shape[2:]
        if h < 64 or w < 64:
            pad = (0, max(64 - w, 0), 0, max(64 - h, 0))
            return self.spynet(F.pad(ref, pad, mode="replicate"), F.pad(supp, pad, mode="replicate"))[..., :h, :w]
        h_up, w_up = (h + 31) // 32 * 32, (w + 31) // 32 * 32
        mean, std = self.sd["spynet.mean"], self.sd["spynet.std"]
        refs = [(F.interpolate(ref, (h_up, w_up), mode="bilinear", align_corners=False) - mean) / std]
        supps = [(F.interpolate(supp, (h_up, w_up), mode="bilinear", align_corners=False) - mean) / std]
        for _ in range(5):
            refs.insert(0, F.avg_pool2d(refs[0], 2, 2, count_include_pad=False))
            supps.insert(0, F.avg_pool2d(supps[0], 2, 2, count_include_pad=False))
        flow = refs[0].new_zeros(ref.shape[0], 2, h_up // 32, w_up // 32)
        for level in range(6):
            up = flow if level == 0 else F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2
            x = torch.cat([refs[level], self.warp(supps[level], up, "border"), up], 1)
            for m in range(5):
                x = self.conv(f"spynet.basic_module.{level}.basic_module.{m}.conv", x)
                x = F.relu(x) if m < 4 else x
            flow = up + x
        flow = F.interpolate(flow, (h, w), mode="bilinear", align_corners=False)
        return torch.stack([flow[:, 0] * w / w_up, flow[:, 1] * h / h_up], 1)

    def deform_conv(self, x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """Modulated deformable conv (DCNv2), 3x3, padding 1, groups of channels sharing offsets:
        each tap's samples by grid_sample, then one matmul over (channels x taps)."""
        n, c, h, w = x.shape
        groups = offset.shape[1] // 18
        per_group = c // groups
        gy, gx = torch.meshgrid(
            torch.arange(h, device=x.device, dtype=x.dtype),
            torch.arange(w, device=x.device, dtype=x.dtype),
            indexing="ij",
        )
        columns = []
        for g in range(groups):
            part = x[:, g * per_group : (g + 1) * per_group]
            taps = []
            for k in range(9):
                dy, dx = offset[:, g * 18 + 2 * k], offset[:, g * 18 + 2 * k + 1]
                py, px = gy + (k // 3 - 1) + dy, gx + (k % 3 - 1) + dx
                grid = torch.stack([2 * px / max(w - 1, 1) - 1, 2 * py / max(h - 1, 1) - 1], 3)
                sample = F.grid_sample(part, grid, "bilinear", "zeros", align_corners=True)
                taps.append(sample * mask[:, g * 9 + k : g * 9 + k + 1])
            columns.append(torch.stack(taps, 2))  # (n, per_group, 9, h, w)
        columns = torch.cat(columns, 1).reshape(n, c * 9, h * w)
        out = weight.reshape(weight.shape[0], -1) @ columns
        return out.view(n, -1, h, w) + bias.view(1, -1, 1, 1)

    def align(self, name: str, features: Tensor, cond: Tensor, flow_1: Tensor, flow_2: Tensor) -> Tensor:
        prefix = f"deform_align.{name}"
        out = torch.cat([cond, flow_1, flow_2], 1)
        for i in (0, 2, 4, 6):
            out = self.conv(f"{prefix}.conv_offset.{i}", out)
            out = F.leaky_relu(out, 0.1) if i < 6 else out
        o1, o2, mask = torch.chunk(out, 3, dim=1)
        o1 = 10 * torch.tanh(o1) + flow_1.flip(1).repeat(1, o1.shape[1] // 2, 1, 1)  # offsets are (y, x)
        o2 = 10 * torch.tanh(o2) + flow_2.flip(1).repeat(1, o2.shape[1] // 2, 1, 1)
        weight, bias = self.sd[f"{prefix}.weight"], self.sd[f"{prefix}.bias"]
        return self.deform_conv(features, torch.cat([o1, o2], 1), torch.sigmoid(mask), weight, bias)

    @torch.no_grad()
    def __call__(self, lqs: Tensor) -> Tensor:
        """Frames are padded by repeating the last row and column, as ours pads them, and the
        output cropped back: to 2x2 features at least, and for same-size models to a multiple
        of 4; SPyNet's input to 64x64 (mmagic refuses smaller frames)."""
        n, t, c, h, w = lqs.shape
        if self.x4:
            pad_h, pad_w = max(2 - h, 0), max(2 - w, 0)
        else:
            pad_h, pad_w = max(8, -(-h // 4) * 4) - h, max(8, -(-w // 4) * 4) - w
        if pad_h or pad_w:
            padded = F.pad(lqs.reshape(n * t, c, h, w).float(), (0, pad_w, 0, pad_h), mode="replicate")
            out = self._forward(padded.view(n, t, c, h + pad_h, w + pad_w))
            scale = 4 if self.x4 else 1
            return out[..., : h * scale, : w * scale]
        return self._forward(lqs)

    def _forward(self, lqs: Tensor) -> Tensor:
        lqs = lqs.float()
        n, t, c, h, w = lqs.shape
        frames = lqs.reshape(-1, c, h, w)
        if self.x4:
            small = lqs
            spatial = self.residual_blocks("feat_extract", frames)
        else:
            small = F.interpolate(frames, scale_factor=0.25, mode="bicubic").view(n, t, c, h // 4, w // 4)
            f = F.leaky_relu(self.conv("feat_extract.0", frames, 2), 0.1)
            spatial = self.residual_blocks("feat_extract.4", F.leaky_relu(self.conv("feat_extract.2", f, 2), 0.1))
        feats: dict[str, list[Tensor]] = {"spatial": list(spatial.view(n, t, *spatial.shape[1:]).unbind(1))}
        sh, sw = small.shape[3:]
        for name in BRANCHES:
            backward = name.startswith("backward")
            order = list(range(t - 1, -1, -1)) if backward else list(range(t))
            earlier = [k for k in feats if k != "spatial"]
            outputs: list[Tensor] = []
            prop = lqs.new_zeros(n, self.mid, sh, sw)
            for step, i in enumerate(order):
                current = feats["spatial"][i]
                if step > 0:
                    previous = order[step - 1]
                    flow_1 = self.spynet(small[:, i], small[:, previous])  # from this frame to the last one
                    cond_1 = self.warp(prop, flow_1)
                    n2, flow_2, cond_2 = torch.zeros_like(prop), torch.zeros_like(flow_1), torch.zeros_like(cond_1)
                    if step > 1:
                        n2 = outputs[-2]
                        flow_prev = self.spynet(small[:, previous], small[:, order[step - 2]])
                        flow_2 = flow_1 + self.warp(flow_prev, flow_1)
                        cond_2 = self.warp(n2, flow_2)
                    cond = torch.cat([cond_1, current, cond_2], 1)
                    prop = self.align(name, torch.cat([prop, n2], 1), cond, flow_1, flow_2)
                x = torch.cat([current, *(feats[k][i] for k in earlier), prop], 1)
                prop = prop + self.residual_blocks(f"backbone.{name}", x)
                outputs.append(prop)
            feats[name] = outputs[::-1] if backward else outputs
        results = []
        for i in range(t):
            x = torch.cat([feats["spatial"][i], *(feats[k][i] for k in BRANCHES)], 1)
            x = self.residual_blocks("reconstruction", x)
            x = F.leaky_relu(F.pixel_shuffle(self.conv("upsample1.upsample_conv", x), 2), 0.1)
            x = F.leaky_relu(F.pixel_shuffle(self.conv("upsample2.upsample_conv", x), 2), 0.1)
            x = self.conv("conv_last", F.leaky_relu(self.conv("conv_hr", x), 0.1))
            base = lqs[:, i]
            if self.x4:
                base = F.interpolate(base, scale_factor=4, mode="bilinear", align_corners=False)
            results.append(x + base)
        return torch.stack(results, 1)
