"""Independent float64 references the tests hold the package to.

Written from docs/REFERENCE.md's facts alone, in a different style from the package: the DCNv2
formula evaluated directly in NumPy, and BasicVSR++ as a function over a state_dict with the
official `generator.` key names (so a wrong key name or shape in the package cannot agree).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PREFIX = "generator."
BRANCHES = ["backward_1", "forward_1", "backward_2", "forward_2"]


# ----------------------------------------------------------------------------- DCNv2
def dcn_reference(x, offset, mask, weight, bias, padding=1) -> np.ndarray:
    """out[n,o,y,x] = b[o] + sum_{c,k} W[o,c,k] * m[n,g(c),k,y,x] * bilinear(x[n,c], p_k + off)."""
    x, offset, mask, weight = (np.asarray(t, dtype=np.float64) for t in (x, offset, mask, weight))
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    taps = kh * kw
    h_out, w_out = offset.shape[2:]
    groups = offset.shape[1] // (2 * taps)
    cg = c_in // groups
    out_y, out_x = np.meshgrid(np.arange(h_out), np.arange(w_out), indexing="ij")
    batch = np.arange(n)[:, None, None, None]
    columns = np.zeros((n, c_in, taps, h_out, w_out))
    for g in range(groups):
        channels = (g * cg + np.arange(cg))[None, :, None, None]
        for k in range(taps):
            i, j = divmod(k, kw)
            py = out_y - padding + i + offset[:, g * 2 * taps + 2 * k]  # dy first
            px = out_x - padding + j + offset[:, g * 2 * taps + 2 * k + 1]
            sample = np.zeros((n, cg, h_out, w_out))
            for yy in (np.floor(py), np.floor(py) + 1):
                for xx in (np.floor(px), np.floor(px) + 1):
                    hat = np.maximum(0, 1 - np.abs(py - yy)) * np.maximum(0, 1 - np.abs(px - xx))
                    inside = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
                    yi = np.clip(yy, 0, h - 1).astype(int)[:, None]
                    xi = np.clip(xx, 0, w - 1).astype(int)[:, None]
                    sample += (hat * inside)[:, None] * x[batch, channels, yi, xi]
            columns[:, g * cg : (g + 1) * cg, k] = sample * mask[:, g * taps + k][:, None]
    out = np.einsum("ock,nckyx->noyx", weight.reshape(c_out, c_in, taps), columns)
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return out


# ----------------------------------------------------------------------------- the state_dict
def official_shapes(mid: int = 64, blocks: int = 7, x4: bool = True, hr: int = 64) -> dict[str, tuple[int, ...]]:
    """Every key of the official network (without `generator.`) and its shape, from the table."""
    shapes: dict[str, tuple[int, ...]] = {"spynet.mean": (1, 3, 1, 1), "spynet.std": (1, 3, 1, 1)}

    def conv(name, c_in, c_out, k=3):
        shapes[f"{name}.weight"] = (c_out, c_in, k, k)
        shapes[f"{name}.bias"] = (c_out,)

    def res_blocks(name, c_in, c_out, n):
        conv(f"{name}.main.0", c_in, c_out)
        for b in range(n):
            conv(f"{name}.main.2.{b}.conv1", c_out, c_out)
            conv(f"{name}.main.2.{b}.conv2", c_out, c_out)

    widths = [8, 32, 64, 32, 16, 2]
    for level in range(6):
        for m in range(5):
            conv(f"spynet.basic_module.{level}.basic_module.{m}.conv", widths[m], widths[m + 1], 7)
    if x4:
        res_blocks("feat_extract", 3, mid, 5)
    else:
        conv("feat_extract.0", 3, mid)
        conv("feat_extract.2", mid, mid)
        res_blocks("feat_extract.4", mid, mid, 5)
    for name in BRANCHES:
        shapes[f"deform_align.{name}.weight"] = (mid, 2 * mid, 3, 3)
        shapes[f"deform_align.{name}.bias"] = (mid,)
        conv(f"deform_align.{name}.conv_offset.0", 3 * mid + 4, mid)
        conv(f"deform_align.{name}.conv_offset.2", mid, mid)
        conv(f"deform_align.{name}.conv_offset.4", mid, mid)
        conv(f"deform_align.{name}.conv_offset.6", mid, 27 * 16)
    for i, name in enumerate(BRANCHES):
        res_blocks(f"backbone.{name}", (2 + i) * mid, mid, blocks)
    res_blocks("reconstruction", 5 * mid, mid, 5)
    conv("upsample1.upsample_conv", mid, mid * 4)
    conv("upsample2.upsample_conv", mid, hr * 4)
    conv("conv_hr", hr, hr)
    conv("conv_last", hr, 3)
    return shapes


def random_official_checkpoint(mid=64, blocks=7, x4=True, seed=0, hr=None) -> dict:
    """A checkpoint in the official layout with random weights, offset heads included.

    hr: the full-size convs' width, 64 in every published network; by default C for the tests'
    small networks (C < 64), where 64 would make those two convs half of a forward's time.

    Scales keep activations O(1) through the recurrence; SPyNet gives flows of a few pixels and
    the offset heads give residues that reach outside the image.
    """
    gen = torch.Generator().manual_seed(seed)
    hr = hr or min(mid, 64)
    state = {}
    for key, shape in official_shapes(mid, blocks, x4, hr).items():
        if key == "spynet.mean":
            value = torch.tensor([0.485, 0.456, 0.406]).view(shape)
        elif key == "spynet.std":
            value = torch.tensor([0.229, 0.224, 0.225]).view(shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            scale = 1.0 / np.sqrt(fan_in) if key.endswith("weight") else 0.02
            if key.startswith("spynet"):
                scale *= 0.5
            if ".conv_offset.6." in key:
                scale *= 4
            if ".main.2." in key and key.endswith("conv2.weight"):
                scale *= 0.3  # residual branches add, they must not explode over frames
            value = (torch.rand(shape, generator=gen) * 2 - 1) * scale * np.sqrt(3)
        state[PREFIX + key] = value
    state["step_counter"] = torch.tensor([600000.0])
    meta = {"mmedit_version": "0.16.0", "iter": 600000, "time": "Wed Feb 17 2021", "best_psnr": np.float64(32.38)}
    return {"meta": meta, "state_dict": state}


# ----------------------------------------------------------------------------- the network
class Reference:
    """BasicVSR++ forward in float64 over an official checkpoint's state_dict."""

    def __init__(self, checkpoint: dict):
        self.sd = {k: v.double() for k, v in checkpoint["state_dict"].items() if k.startswith(PREFIX)}
        self.x4 = PREFIX + "feat_extract.main.0.weight" in self.sd
        self.mid = self.sd[PREFIX + "deform_align.backward_1.bias"].shape[0]
        self.spynet_calls = 0

    def p(self, key):
        return self.sd[PREFIX + key]

    def conv(self, name, x, stride=1):
        weight = self.p(f"{name}.weight")
        return F.conv2d(x, weight, self.p(f"{name}.bias"), stride=stride, padding=weight.shape[-1] // 2)

    def res_blocks(self, name, x):
        x = F.leaky_relu(self.conv(f"{name}.main.0", x), 0.1)
        b = 0
        while PREFIX + f"{name}.main.2.{b}.conv1.weight" in self.sd:
            x = x + self.conv(f"{name}.main.2.{b}.conv2", F.relu(self.conv(f"{name}.main.2.{b}.conv1", x)))
            b += 1
        return x

    @staticmethod
    def warp(x, flow, padding_mode="zeros"):  # flow (n, 2, h, w), channel 0 = x
        h, w = x.shape[2:]
        gy, gx = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
        vx = 2 * (gx + flow[:, 0]) / max(w - 1, 1) - 1
        vy = 2 * (gy + flow[:, 1]) / max(h - 1, 1) - 1
        return F.grid_sample(x, torch.stack([vx, vy], 3), "bilinear", padding_mode, align_corners=True)

    def spynet(self, ref, supp):
        """SPyNet's flow; frames under 64x64 are padded to it (replicate, bottom and right) and
        the flow cropped back: the rest of the network sees them as they are."""
        self.spynet_calls += 1
        h, w = ref.shape[2:]
        pad = (0, max(64 - w, 0), 0, max(64 - h, 0))
        return self.pyramid_flow(F.pad(ref, pad, mode="replicate"), F.pad(supp, pad, mode="replicate"))[..., :h, :w]

    def pyramid_flow(self, ref, supp):
        h, w = ref.shape[2:]
        h_up, w_up = (h + 31) // 32 * 32, (w + 31) // 32 * 32
        mean, std = self.p("spynet.mean"), self.p("spynet.std")
        ref = [(F.interpolate(ref, (h_up, w_up), mode="bilinear", align_corners=False) - mean) / std]
        supp = [(F.interpolate(supp, (h_up, w_up), mode="bilinear", align_corners=False) - mean) / std]
        for _ in range(5):
            ref.insert(0, F.avg_pool2d(ref[0], 2, 2, count_include_pad=False))
            supp.insert(0, F.avg_pool2d(supp[0], 2, 2, count_include_pad=False))
        flow = torch.zeros(ref[0].shape[0], 2, h_up // 32, w_up // 32, dtype=ref[0].dtype)
        for level in range(6):
            up = flow if level == 0 else F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2
            x = torch.cat([ref[level], self.warp(supp[level], up, "border"), up], 1)
            for m in range(5):
                x = self.conv(f"spynet.basic_module.{level}.basic_module.{m}.conv", x)
                x = F.relu(x) if m < 4 else x
            flow = up + x
        flow = F.interpolate(flow, (h, w), mode="bilinear", align_corners=False)
        return torch.stack([flow[:, 0] * w / w_up, flow[:, 1] * h / h_up], 1)

    def deform_align(self, name, x, cond, flow_1, flow_2):
        prefix = f"deform_align.{name}"
        out = torch.cat([cond, flow_1, flow_2], 1)
        for i in (0, 2, 4, 6):
            out = self.conv(f"{prefix}.conv_offset.{i}", out)
            out = F.leaky_relu(out, 0.1) if i < 6 else out
        o1, o2, m = out[:, :144], out[:, 144:288], out[:, 288:]
        o1 = 10 * torch.tanh(o1) + torch.stack([flow_1[:, 1], flow_1[:, 0]], 1).repeat(1, 72, 1, 1)
        o2 = 10 * torch.tanh(o2) + torch.stack([flow_2[:, 1], flow_2[:, 0]], 1).repeat(1, 72, 1, 1)
        out = dcn_reference(
            x, torch.cat([o1, o2], 1), torch.sigmoid(m), self.p(f"{prefix}.weight"), self.p(f"{prefix}.bias")
        )
        return torch.from_numpy(out)

    @torch.no_grad()
    def __call__(self, lqs: torch.Tensor, mirror_shortcut: bool = False) -> torch.Tensor:
        lqs = lqs.double()
        n, t, c, h, w = lqs.shape
        if self.x4:
            small = lqs
            spatial = self.res_blocks("feat_extract", lqs.reshape(-1, c, h, w))
        else:
            small = F.interpolate(lqs.reshape(-1, c, h, w), scale_factor=0.25, mode="bicubic")
            small = small.view(n, t, c, h // 4, w // 4)
            f = F.leaky_relu(self.conv("feat_extract.0", lqs.reshape(-1, c, h, w), 2), 0.1)
            f = F.leaky_relu(self.conv("feat_extract.2", f, 2), 0.1)
            spatial = self.res_blocks("feat_extract.4", f)
        feats = {"spatial": [spatial.view(n, t, *spatial.shape[1:])[:, i] for i in range(t)]}
        sh, sw = small.shape[3:]
        a = small[:, :-1].reshape(-1, c, sh, sw)
        b = small[:, 1:].reshape(-1, c, sh, sw)
        flows_backward = self.spynet(a, b).view(n, t - 1, 2, sh, sw)
        if mirror_shortcut:
            flows_forward = flows_backward.flip(1)
        else:
            flows_forward = self.spynet(b, a).view(n, t - 1, 2, sh, sw)

        for name in BRANCHES:
            flows = flows_backward if "backward" in name else flows_forward
            frame_idx = list(range(t))
            flow_idx = list(range(-1, t - 1))
            if "backward" in name:
                frame_idx = frame_idx[::-1]
                flow_idx = frame_idx
            others = [k for k in feats if k != "spatial"]
            feats[name] = []
            prop = torch.zeros(n, self.mid, sh, sw, dtype=lqs.dtype)
            for i, idx in enumerate(frame_idx):
                cur = feats["spatial"][idx]
                if i > 0:
                    f1 = flows[:, flow_idx[i]]
                    c1 = self.warp(prop, f1)
                    n2, f2, c2 = torch.zeros_like(prop), torch.zeros_like(f1), torch.zeros_like(c1)
                    if i > 1:
                        n2 = feats[name][-2]
                        f2 = f1 + self.warp(flows[:, flow_idx[i - 1]], f1)
                        c2 = self.warp(n2, f2)
                    prop = self.deform_align(name, torch.cat([prop, n2], 1), torch.cat([c1, cur, c2], 1), f1, f2)
                x = torch.cat([cur] + [feats[k][idx] for k in others] + [prop], 1)
                prop = prop + self.res_blocks(f"backbone.{name}", x)
                feats[name].append(prop)
            if "backward" in name:
                feats[name] = feats[name][::-1]

        outs = []
        for i in range(t):
            x = torch.cat([feats["spatial"][i]] + [feats[k][i] for k in BRANCHES], 1)
            x = self.res_blocks("reconstruction", x)
            x = F.leaky_relu(F.pixel_shuffle(self.conv("upsample1.upsample_conv", x), 2), 0.1)
            x = F.leaky_relu(F.pixel_shuffle(self.conv("upsample2.upsample_conv", x), 2), 0.1)
            x = F.leaky_relu(self.conv("conv_hr", x), 0.1)
            x = self.conv("conv_last", x)
            base = lqs[:, i]
            if self.x4:
                base = F.interpolate(base, scale_factor=4, mode="bilinear", align_corners=False)
            outs.append(x + base)
        return torch.stack(outs, 1)
