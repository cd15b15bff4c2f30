"""Modulated deformable convolution (DCNv2) as one fused Triton kernel: the fast path on CUDA.

It computes what `_plain_deform_conv2d` in deform_conv.py computes (tests/test_deform_conv.py holds
the two, and the float64 formula, equal): per program a tile of BLOCK_P output pixels, and for
each kernel tap and each block of deformable groups

  1. the sampling positions, in fp32 whatever the feature dtype (a half-precision position is
     only good to 0.5 px past x = 1024; docs/REFERENCE.md section 7),
  2. the four bilinear corners gathered from the features (zeros outside the image), weighted
     and modulated by the mask in fp32, then rounded once to the feature dtype,
  3. a tensor-core dot of those samples (BLOCK_P x channels) with the tap's weights
     (channels x C_out) into an fp32 accumulator,

then the bias is added and the tile stored. The im2col columns that other implementations
write to memory (9 x C_in values per pixel) never leave the chip.

Positions are computed once per (pixel, group) and broadcast over the group's channels. Any
layout of the tensors works (strides are passed); channels-last features make each corner a
contiguous run of the group's channels.
"""

from __future__ import annotations

import contextlib
import inspect

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK_P = 64  # output pixels per program
# fp32's operands take twice the shared memory, and its exact ("ieee") dot stages more: at 64
# pixels a program needed 188 KiB (compiled for sm_80 and sm_90), past an A100's 163 KiB and a
# consumer GPU's 99 KiB. Fewer pixels per program fit (tests/test_deform_conv.py checks).
BLOCK_P_FP32 = 16


@triton.jit
def _deform_conv_kernel(
    x_ptr, offset_ptr, mask_ptr, weight_ptr, bias_ptr, out_ptr,
    N, H, W, H_OUT, W_OUT, C_OUT,
    sx_n, sx_c, sx_h, sx_w,
    so_n, so_c, so_h, so_w,
    sm_n, sm_c, sm_h, sm_w,
    sw_o, sw_c, sw_i, sw_j,
    sy_n, sy_c, sy_h, sy_w,
    GROUPS: tl.constexpr, GROUP_CHANNELS: tl.constexpr, GC_BLOCK: tl.constexpr, G_BLOCK: tl.constexpr,
    KH: tl.constexpr, KW: tl.constexpr, PAD: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    TAPS: tl.constexpr = KH * KW
    BLOCK_C: tl.constexpr = G_BLOCK * GC_BLOCK

    pixel = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pixel_ok = pixel < N * H_OUT * W_OUT
    # Element offsets in 64 bits: a row of channels-last offsets (16 groups x 18 = 288 channels)
    # times the rows passes 2**31 from about 7.4 Mpx (an untiled 4K input).
    out_x = (pixel % W_OUT).to(tl.int64)
    out_y = ((pixel // W_OUT) % H_OUT).to(tl.int64)
    image = (pixel // (W_OUT * H_OUT)).to(tl.int64)
    o = tl.arange(0, BLOCK_O)
    o_ok = o < C_OUT

    # (BLOCK_P, 1) per pixel, (1, G_BLOCK) per group, (1, 1, GC_BLOCK) per channel of a group
    offset_at = offset_ptr + (image * so_n + out_y * so_h + out_x * so_w)[:, None]
    mask_at = mask_ptr + (image * sm_n + out_y * sm_h + out_x * sm_w)[:, None]
    x_at = x_ptr + (image * sx_n)[:, None, None]
    within_group = tl.arange(0, GC_BLOCK)[None, None, :]

    acc = tl.zeros((BLOCK_P, BLOCK_O), dtype=tl.float32)
    for k in tl.static_range(TAPS):
        for g0 in range(0, GROUPS, G_BLOCK):
            group = g0 + tl.arange(0, G_BLOCK)[None, :]
            use = pixel_ok[:, None] & (group < GROUPS)  # (BLOCK_P, G_BLOCK)
            # Layout shared by mmcv, torchvision and TensorRT: offsets (dy, dx) at channel
            # g * 2 * TAPS + 2 * k (+ 1), the mask at g * TAPS + k.
            dy = tl.load(offset_at + (group * 2 * TAPS + 2 * k) * so_c, mask=use, other=0.0).to(tl.float32)
            dx = tl.load(offset_at + (group * 2 * TAPS + 2 * k + 1) * so_c, mask=use, other=0.0).to(tl.float32)
            modulation = tl.load(mask_at + (group * TAPS + k) * sm_c, mask=use, other=0.0).to(tl.float32)
            pos_y = (out_y - PAD + k // KW).to(tl.float32)[:, None] + dy
            pos_x = (out_x - PAD + k % KW).to(tl.float32)[:, None] + dx
            y0f = tl.floor(pos_y)
            x0f = tl.floor(pos_x)
            frac_y = pos_y - y0f
            frac_x = pos_x - x0f
            y0 = y0f.to(tl.int64)
            x0 = x0f.to(tl.int64)

            channel = (group * GROUP_CHANNELS)[:, :, None] + within_group  # (1, G_BLOCK, GC_BLOCK)
            channel_ok = (within_group < GROUP_CHANNELS) & (group < GROUPS)[:, :, None]
            x_channel_at = x_at + channel * sx_c
            sample = tl.zeros((BLOCK_P, G_BLOCK, GC_BLOCK), dtype=tl.float32)
            for corner in tl.static_range(4):
                cy = y0 + corner // 2
                cx = x0 + corner % 2
                weight_y = frac_y if corner // 2 == 1 else 1.0 - frac_y
                weight_x = frac_x if corner % 2 == 1 else 1.0 - frac_x
                inside = use & (cy >= 0) & (cy < H) & (cx >= 0) & (cx < W)
                corner_weight = tl.where(inside, weight_y * weight_x * modulation, 0.0)
                load_ok = inside[:, :, None] & channel_ok
                values = tl.load(x_channel_at + (cy * sx_h + cx * sx_w)[:, :, None], mask=load_ok, other=0.0)
                sample += corner_weight[:, :, None] * values.to(tl.float32)

            columns = tl.reshape(sample, (BLOCK_P, BLOCK_C))
            c = tl.reshape(channel, (BLOCK_C,))
            c_ok = tl.reshape(channel_ok, (BLOCK_C,))
            kernel = tl.load(
                weight_ptr + o[None, :] * sw_o + c[:, None] * sw_c + (k // KW) * sw_i + (k % KW) * sw_j,
                mask=c_ok[:, None] & o_ok[None, :],
                other=0.0,
            )  # (BLOCK_C, BLOCK_O)
            acc = tl.dot(columns.to(kernel.dtype), kernel, acc, input_precision=DOT_PRECISION)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + o, mask=o_ok, other=0.0).to(tl.float32)[None, :]
    out_at = out_ptr + (image * sy_n + out_y * sy_h + out_x * sy_w)[:, None] + o[None, :] * sy_c
    tl.store(out_at, acc.to(out_ptr.dtype.element_ty), mask=pixel_ok[:, None] & o_ok[None, :])


def triton_deform_conv2d(
    x: Tensor,  # (n, c_in, h, w): fp32, fp16 or bf16, any layout
    offset: Tensor,  # (n, groups * 2 * kh * kw, h_out, w_out); fp32 keeps positions exact
    mask: Tensor,  # (n, groups * kh * kw, h_out, w_out)
    weight: Tensor,  # (c_out, c_in, kh, kw), x's dtype
    bias: Tensor | None,
    padding: int = 1,
) -> Tensor:  # (n, c_out, h_out, w_out), x's dtype and memory format
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    h_out, w_out = offset.shape[-2:]
    groups = offset.shape[1] // (2 * kh * kw)
    weight = weight.to(x.dtype)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(n, c_out, h_out, w_out, device=x.device, dtype=x.dtype, memory_format=memory_format)
    constants = launch_constants(c_in, c_out, groups, kh, kw, padding, bias is not None, x.dtype)
    grid = (triton.cdiv(n * h_out * w_out, constants["BLOCK_P"]),)
    # Triton launches on the current device, not the tensors': a worker on cuda:1 would fail.
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        _deform_conv_kernel[grid](
            x, offset, mask, weight, bias if bias is not None else weight, out,
            n, h, w, h_out, w_out, c_out,
            *x.stride(), *offset.stride(), *mask.stride(), *weight.stride(), *out.stride(),
            **constants,
        )  # fmt: skip
    return out


def launch_constants(
    c_in: int, c_out: int, groups: int, kh: int, kw: int, padding: int, has_bias: bool, dtype: torch.dtype
) -> dict[str, int | bool | str]:
    """The kernel's compile-time constants for one convolution."""
    group_channels = c_in // groups
    gc_block = triton.next_power_of_2(group_channels)
    # at least 16 channels per dot (tensor cores' K), at most 64 (registers)
    g_block = max(16 // gc_block, min(triton.next_power_of_2(groups), max(1, 64 // gc_block)), 1)
    return dict(
        GROUPS=groups, GROUP_CHANNELS=group_channels, GC_BLOCK=gc_block, G_BLOCK=g_block,
        KH=kh, KW=kw, PAD=padding, HAS_BIAS=has_bias,
        BLOCK_P=BLOCK_P if dtype != torch.float32 else BLOCK_P_FP32, BLOCK_O=max(16, triton.next_power_of_2(c_out)),
        DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32",
    )  # fmt: skip


def compile_for_gpu(
    capability: int, dtype: torch.dtype, c_in: int = 128, c_out: int = 64, groups: int = 16
) -> triton.compiler.CompiledKernel:
    """Compile the kernel for an NVIDIA GPU of this compute capability (90: H100) down to its
    binary, without a GPU: what the GPU compiler would reject (the interpreter is more lenient)
    fails here. Default shape: the network's DCN, 2C -> C with C = 64."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    kernel = _deform_conv_kernel
    if not isinstance(kernel, JITFunction):  # defined under TRITON_INTERPRET=1
        kernel = JITFunction(kernel.fn)
    element = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    constants = launch_constants(c_in, c_out, groups, 3, 3, 1, True, dtype)
    pointers = ("x_ptr", "offset_ptr", "mask_ptr", "weight_ptr", "bias_ptr", "out_ptr")
    signature = {name: "*fp32" if name == "offset_ptr" else f"*{element}" for name in pointers}
    signature |= {name: "constexpr" if name in constants else "i32" for name in kernel.arg_names[len(pointers) :]}
    if "constexprs" in inspect.signature(ASTSource).parameters:  # Triton 3.3 on: by argument position
        constexprs = {(kernel.arg_names.index(name),): value for name, value in constants.items()}
        source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    else:  # Triton 3.2 (PyTorch 2.6's): by argument name
        source = ASTSource(fn=kernel, signature=signature, constants=constants)
    return triton.compile(source, target=GPUTarget("cuda", capability, 32))
