"""Modulated deformable convolution (DCNv2) behind one function, with backends.

Layout (shared by mmcv, torchvision and TensorRT): for deformable group g and kernel tap
k = i * kw + j, offset channel g * 2K + 2k is dy and g * 2K + 2k + 1 is dx; mask channel
g * K + k. Samples outside the image read zeros (bilinear, like grid_sample padding "zeros").

Backends:
- "triton": one fused kernel (deform_conv_triton.py): gathers, modulation and tensor-core dots
  with fp32 positions and an fp32 accumulator; CUDA only (and the CPU under TRITON_INTERPRET=1,
  for tests). The fast path on a GPU.
- "torch": plain PyTorch. fp32: the plain algorithm below. fp16/bf16: per kernel tap a gather
  of bilinear rows and a matmul into an fp32 accumulator (grid_sample would round the
  coordinates to the feature dtype). Sampling coordinates and weights are always fp32.
- "mmcv": mmcv.ops.modulated_deform_conv2d, when mmcv is installed.
- "torchvision": torchvision.ops.deform_conv2d, when it imports and works.
- "plain": the straightforward way, one grid_sample per tap; the baseline `vsrpp bench` compares
  against, never picked by "auto".
"auto" takes the first of triton (CUDA, fp16/bf16), mmcv, torchvision, torch that passes the probe for the device
and dtype. mmcv and torchvision compute sampling positions in the dtype of their inputs, so in
fp16/bf16 they are given fp32 features and offsets (docs/REFERENCE.md section 7: in fp16 a
position is only good to 0.5 px past x = 1024); the probe samples at such positions, so a backend
that loses them is never chosen.

Inference goes through one operator, `vsrpp::modulated_deform_conv2d`: one dispatched call per
convolution whatever the backend (torch.compile and CUDA graphs see one opaque node). Training
calls the differentiable implementations directly.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("triton", "torch", "torchvision", "mmcv", "plain")
AUTO_ORDER = ("triton", "mmcv", "torchvision", "torch")
PROBE_WIDTH = 1152  # past 1024, where fp16 positions are 0.5 px apart


def modulated_deform_conv2d(
    x: Tensor,  # (n, c_in, h, w)
    offset: Tensor,  # (n, groups * 2 * kh * kw, h_out, w_out)
    mask: Tensor,  # (n, groups * kh * kw, h_out, w_out)
    weight: Tensor,  # (c_out, c_in, kh, kw)
    bias: Tensor | None,
    padding: int = 1,
    backend: str = "auto",
) -> Tensor:  # (n, c_out, h_out, w_out); stride 1, dilation 1
    if torch.compiler.is_compiling() and backend in ("torch", "plain"):
        return _IMPLEMENTATIONS[backend](x, offset, mask, weight, bias, padding)  # Inductor fuses its gathers
    # A backend admitted here already (at any probe size: the model probes at its own when it
    # loads) runs without another probe, which inside a CUDA graph capture would break it.
    admitted = (backend, str(x.device), x.dtype) in _ADMITTED
    name = backend if admitted else resolve_backend(backend, x.device, x.dtype)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, offset, mask, weight, bias)):
        if name in ("triton", "mmcv", "torchvision"):  # inference kernels: train on the torch one
            name = "torch"
        return _IMPLEMENTATIONS[name](x, offset, mask, weight, bias, padding)
    return torch.ops.vsrpp.modulated_deform_conv2d(x, offset, mask, weight, bias, padding, name)


# Defined with torch.library's low-level Library rather than the custom_op decorator: custom_op
# wraps its kernel in a Dynamo guard whose first call imports torch._dynamo (1.5 s of every
# worker's start, measured on the CPU), while a Library kernel is called as it is. Both make the
# same opaque operator for torch.compile (a fake kernel gives its output's shape). No autograd
# kernel: training never calls the operator (see modulated_deform_conv2d).
_LIBRARY = torch.library.Library("vsrpp", "DEF")
_LIBRARY.define(
    "modulated_deform_conv2d(Tensor x, Tensor offset, Tensor mask, Tensor weight, Tensor? bias, int padding, "
    "str backend) -> Tensor"
)


def _deform_conv_operator(
    x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None, padding: int, backend: str
) -> Tensor:
    return _IMPLEMENTATIONS[backend](x, offset, mask, weight, bias, padding)


_LIBRARY.impl("modulated_deform_conv2d", _deform_conv_operator, "CompositeExplicitAutograd")


@torch.library.register_fake("vsrpp::modulated_deform_conv2d", lib=_LIBRARY)
def _(x, offset, mask, weight, bias, padding, backend):
    return x.new_empty(x.shape[0], weight.shape[0], *offset.shape[-2:])


@dataclass(frozen=True)
class ProbeShape:
    """The sizes a backend is probed at: the network's own (BasicVSR++ C64: 128 channels in 16
    groups, 64 out), so that a kernel whose configuration depends on them (block sizes, shared
    memory) is checked in the configuration the run will launch. The default is a small one."""

    channels: int = 4
    groups: int = 2
    out_channels: int = 3


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype, shape: ProbeShape = ProbeShape()) -> str:
    """The concrete backend that `backend` ("auto" or a name) means for this device (its index
    included: the probe runs there) and dtype, probed at `shape`."""
    if backend == "auto":
        for name in AUTO_ORDER:
            if name == "triton" and (device.type != "cuda" or dtype == torch.float32):
                # The interpreter is for tests, far too slow for work. In fp32 the kernel's dot
                # is exact FMA arithmetic staged through 188 KiB of shared memory per program
                # (compiled for sm_90): fp32's native kernels serve better; --precision fp16/bf16
                # is the fast path.
                continue
            if backend_works(name, str(device), dtype, shape):
                _ADMITTED.add((name, str(device), dtype))
                return name
        return "torch"
    if backend not in BACKENDS:
        raise ValueError(f"unknown deformable-conv backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
    if not backend_works(backend, str(device), dtype, shape):
        raise RuntimeError(f"deformable-conv backend {backend!r} is not usable on {device.type} with {dtype}")
    _ADMITTED.add((backend, str(device), dtype))
    return backend


_ADMITTED: set[tuple[str, str, torch.dtype]] = set()  # (backend, device, dtype) that passed a probe


def available_backends(device: str = "cpu", dtype: torch.dtype = torch.float32) -> list[str]:
    return [name for name in BACKENDS if backend_works(name, device, dtype)]


def backend_table() -> dict[str, Any]:
    """For each device here and precision: the backends that pass the probe, and auto's pick."""
    devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    works, auto = {}, {}
    for device in devices:
        for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
            if device == "cpu" and dtype == torch.float16:
                continue  # fp16 convolutions are fast only on CPUs with AVX-512 FP16 or AMX: not offered
            column = f"{device} {precision}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a failing backend warns; here it is a row of the table
                names = [n for n in BACKENDS if device == "cuda" or n != "triton"]  # a CUDA kernel (tests interpret it)
                works[column] = [n for n in names if backend_works(n, device, dtype)]
                auto[column] = resolve_backend("auto", torch.device(device), dtype)
    return {"backends": list(BACKENDS), "works": works, "auto": auto}


@functools.cache
def backend_works(name: str, device: str, dtype: torch.dtype, shape: ProbeShape = ProbeShape()) -> bool:
    """Import the backend and check it once on the probe problem, on `device` ("cpu", "cuda",
    "cuda:N": that GPU, not the current one) at `shape`."""
    if name == "torch":
        return True
    if name == "triton" and not device.startswith("cuda") and os.environ.get("TRITON_INTERPRET") != "1":
        return False
    try:
        return passes_probe(_IMPLEMENTATIONS[name], device, dtype, name, shape)
    except Exception:  # an import error, a missing kernel, a build for another torch
        return False


def passes_probe(
    implementation: Callable[..., Tensor], device: str, dtype: torch.dtype, name: str = "this backend",
    shape: ProbeShape = ProbeShape(),
) -> bool:  # fmt: skip
    """Does `implementation` agree with the plain fp32 one on a problem that samples past
    x = 1024 (where fp16 positions are 0.5 px apart) a pattern that changes within a pixel, in
    each memory layout the network feeds: contiguous, views into larger tensors (the offsets and
    masks are chunks of one convolution's output), and channels-last (CUDA)? A kernel that reads
    a view's memory as if it were contiguous fails the second."""
    problem = [t.to(device) for t in probe_problem(shape)]
    x, offset, mask, weight, bias = problem
    x, weight, bias = (t.to(dtype) for t in (x, weight, bias))
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    for layout in probe_layouts(x, offset, mask):
        want = _plain_deform_conv2d(layout[0].float(), *layout[1:], weight.float(), bias.float(), 1)
        got = implementation(*layout, weight, bias, 1).float()
        error = float((got - want).abs().max() / want.abs().max())
        if not error <= tolerance:  # NaN fails too
            warnings.warn(f"deformable-conv backend {name!r} disagrees with the reference; not using it", stacklevel=2)
            return False
    return True


def probe_layouts(x: Tensor, offset: Tensor, mask: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
    """The same values as the network lays them out: contiguous (the whole strip); then, on its
    last 64 columns (the far positions, and few programs for an interpreted kernel), as views
    (features a channel slice of a wider tensor, offsets and masks chunks of one tensor, as
    basicvsrpp.py makes them) and channels-last."""
    end = [t[..., -64:].contiguous() for t in (x, offset, mask)]
    wide = torch.cat([end[0], end[0].flip(1)], dim=1)[:, : x.shape[1]]  # a view with the channel stride of 2c
    joined = torch.cat([end[1], end[2]], dim=1)
    offset_view, mask_view = joined[:, : offset.shape[1]], joined[:, offset.shape[1] :]
    last = [t.contiguous(memory_format=torch.channels_last) for t in end]
    return [(x, offset, mask), (wide, offset_view, mask_view), tuple(last)]


def probe_problem(shape: ProbeShape = ProbeShape()) -> tuple[Tensor, ...]:
    """A 2-row strip PROBE_WIDTH wide: sin(1.3 x + phase) per channel, fractional offsets of a
    few px, at `shape`'s channels and groups."""
    generator = torch.Generator().manual_seed(0)
    n, c, h, w, groups = 1, shape.channels, 2, PROBE_WIDTH, shape.groups
    columns = torch.arange(w, dtype=torch.float32)
    x = torch.stack([torch.sin(1.3 * columns + phase) for phase in range(c)]).view(1, c, 1, w).repeat(1, 1, h, 1)
    offset = 3 * torch.rand(n, groups * 18, h, w, generator=generator) - 1.5
    mask = torch.rand(n, groups * 9, h, w, generator=generator)
    weight = torch.randn(shape.out_channels, c, 3, 3, generator=generator) / c**0.5
    bias = torch.randn(shape.out_channels, generator=generator)
    return x, offset, mask, weight, bias


def _torch_deform_conv2d(x, offset, mask, weight, bias, padding):
    # In fp32 the straightforward way (grid_sample per tap, one matmul) was the fastest we
    # measured on the CPU (`vsrpp bench`, benchmarks/RESULTS.md); grid_sample cannot keep fp32
    # coordinates for fp16/bf16 features, so those gather rows instead.
    if x.dtype == torch.float32:
        return _plain_deform_conv2d(x, offset, mask, weight, bias, padding)
    return _gather_deform_conv2d(x, offset, mask, weight, bias, padding)


def _gather_deform_conv2d(x, offset, mask, weight, bias, padding):
    """Reduced precision: per kernel tap, bilinear samples gathered as rows of a channels-last view (positions and
    weights in fp32), then one matmul into an fp32 accumulator. One tap at a time keeps the
    temporaries at 1/9 of a full im2col."""
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    taps = kh * kw
    h_out, w_out = offset.shape[-2:]
    groups = offset.shape[1] // (2 * taps)
    group_channels = c_in // groups

    # Rows of (n * groups * h * w, group_channels): one row per (image, group, pixel).
    rows = x.view(n, groups, group_channels, h, w).permute(0, 1, 3, 4, 2).reshape(-1, group_channels)
    first_row = (
        torch.arange(n, device=x.device).view(n, 1, 1, 1) * groups
        + torch.arange(groups, device=x.device).view(1, 1, 1, groups)
    ) * (h * w)
    offset = offset.float().view(n, groups, taps, 2, h_out, w_out)
    mask = mask.float().view(n, groups, taps, h_out, w_out)
    base_y = torch.arange(h_out, device=x.device, dtype=torch.float32).view(1, h_out, 1, 1) - padding
    base_x = torch.arange(w_out, device=x.device, dtype=torch.float32).view(1, 1, w_out, 1) - padding
    kernel = weight.view(c_out, c_in, taps)
    out = torch.zeros(n * h_out * w_out, c_out, device=x.device, dtype=torch.float32)
    for k in range(taps):
        i, j = divmod(k, kw)
        pos_y = base_y + i + offset[:, :, k, 0].permute(0, 2, 3, 1)  # (n, h_out, w_out, groups)
        pos_x = base_x + j + offset[:, :, k, 1].permute(0, 2, 3, 1)
        modulation = mask[:, :, k].permute(0, 2, 3, 1)
        y0, x0 = pos_y.floor(), pos_x.floor()
        frac_y, frac_x = pos_y - y0, pos_x - x0
        y0, x0 = y0.long(), x0.long()
        sampled = None
        for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
            cy, cx = y0 + dy, x0 + dx
            inside = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
            corner = (frac_y if dy else 1 - frac_y) * (frac_x if dx else 1 - frac_x) * modulation * inside
            index = first_row + cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)
            term = rows[index] * corner.to(x.dtype).unsqueeze(-1)  # (n, h_out, w_out, groups, gc)
            sampled = term if sampled is None else sampled + term
        out += (sampled.reshape(-1, c_in) @ kernel[:, :, k].t()).float()
    if bias is not None:
        out += bias.float()
    return out.view(n, h_out, w_out, c_out).permute(0, 3, 1, 2).to(x.dtype)


def _mmcv_deform_conv2d(x, offset, mask, weight, bias, padding):
    from mmcv.ops import modulated_deform_conv2d as mmcv_dcn

    groups = offset.shape[1] // (2 * weight.shape[2] * weight.shape[3])
    # mmcv's positions are in the input dtype, and its kernel reads memory as contiguous.
    x32, offset32, mask32, weight32, bias32 = _fp32_contiguous(x, offset, mask, weight, bias)
    out = mmcv_dcn(x32, offset32, mask32, weight32, bias32, 1, padding, 1, 1, groups)
    return out.to(x.dtype)


def _torchvision_deform_conv2d(x, offset, mask, weight, bias, padding):
    from torchvision.ops import deform_conv2d

    # torchvision's positions are in the input dtype; contiguous, as for mmcv (the same layout).
    x32, offset32, mask32, weight32, bias32 = _fp32_contiguous(x, offset, mask, weight, bias)
    return deform_conv2d(x32, offset32, weight32, bias32, padding=padding, mask=mask32).to(x.dtype)


def _triton_deform_conv2d(x, offset, mask, weight, bias, padding):
    from .deform_conv_triton import triton_deform_conv2d

    return triton_deform_conv2d(x, offset, mask, weight, bias, padding)


def _fp32_contiguous(*tensors: Tensor | None) -> list[Tensor | None]:
    return [None if t is None else t.float().contiguous() for t in tensors]


def _plain_deform_conv2d(x, offset, mask, weight, bias, padding):
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    taps = kh * kw
    groups = offset.shape[1] // (2 * taps)
    features = x.float().reshape(n * groups, c_in // groups, h, w)
    ys = torch.arange(h, device=x.device, dtype=torch.float32).view(1, 1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, 1, w)
    sampled = []
    for k in range(taps):
        i, j = divmod(k, kw)
        dy = offset[:, 2 * k :: 2 * taps].float()  # (n, groups, h, w)
        dx = offset[:, 2 * k + 1 :: 2 * taps].float()
        grid_x = 2 * (xs - padding + j + dx) / max(w - 1, 1) - 1
        grid_y = 2 * (ys - padding + i + dy) / max(h - 1, 1) - 1
        grid = torch.stack([grid_x, grid_y], dim=-1).view(n * groups, h, w, 2)
        tap = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        sampled.append(tap.view(n, groups, -1, h, w) * mask[:, k::taps].float().unsqueeze(2))
    columns = torch.stack(sampled, dim=3).view(n, c_in * taps, h * w)  # (n, groups*gc*taps, hw)
    out = torch.einsum("ok,nkp->nop", weight.float().reshape(c_out, -1), columns).view(n, c_out, h, w)
    if bias is not None:
        out = out + bias.float().view(1, -1, 1, 1)
    return out.to(x.dtype)


_IMPLEMENTATIONS = {
    "triton": _triton_deform_conv2d,
    "torch": _torch_deform_conv2d,
    "mmcv": _mmcv_deform_conv2d,
    "torchvision": _torchvision_deform_conv2d,
    "plain": _plain_deform_conv2d,
}
