"""Every deformable-conv backend against the DCNv2 formula evaluated in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import dcn_reference

from vsrpp_cli.network import deform_conv
from vsrpp_cli.network.deform_conv import available_backends, modulated_deform_conv2d, resolve_backend

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def needs(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def problem(n=2, c_in=32, c_out=8, h=9, w=11, groups=16, reach=6.0, seed=0):
    """Random offsets up to `reach` pixels: many taps land outside the image."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, h, w, generator=gen)
    offset = reach * (2 * torch.rand(n, groups * 18, h, w, generator=gen) - 1)
    offset[:, :18] = offset[:, :18].round()  # integer positions: the corners of bilinear sampling
    mask = torch.rand(n, groups * 9, h, w, generator=gen)
    weight = torch.randn(c_out, c_in, 3, 3, generator=gen) / np.sqrt(9 * c_in)
    bias = torch.randn(c_out, generator=gen)
    return x, offset, mask, weight, bias


def backends_on(device: str) -> list[str]:
    return available_backends(device) if device == "cpu" or torch.cuda.is_available() else []


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", deform_conv.BACKENDS)
@pytest.mark.parametrize("shape", [dict(), dict(n=1, c_in=4, c_out=3, h=5, w=7, groups=2, reach=12.0)])
def test_fp32_matches_the_formula(device, backend, shape):
    needs(device)
    if backend not in backends_on(device):
        pytest.skip(f"{backend} is not installed or does not work here")
    x, offset, mask, weight, bias = problem(**shape)
    want = dcn_reference(x, offset, mask, weight, bias)
    args = (t.to(device) for t in (x, offset, mask, weight, bias))
    got = modulated_deform_conv2d(*args, backend=backend).cpu().double().numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_backend_reduced_precision(device, dtype):
    needs(device)
    x, offset, mask, weight, bias = problem()
    want = dcn_reference(x, offset, mask, weight, bias)
    args = [t.to(device) for t in (x, offset, mask, weight, bias)]
    args[0], args[3], args[4] = (t.to(dtype) for t in (args[0], args[3], args[4]))
    got = modulated_deform_conv2d(*args, backend="torch")
    assert got.dtype == dtype
    error = np.abs(got.cpu().double().numpy() - want).max()
    assert error < (2e-2 if dtype == torch.float16 else 1e-1) * np.abs(want).max()


@pytest.mark.parametrize("device", DEVICES)
def test_sampling_coordinates_stay_fp32_with_fp16_features(device):
    """Far from the origin fp16 cannot hold a fractional position (spacing 0.5 past 1024): a
    half-pixel error on a pattern that changes fast would show in the output."""
    needs(device)
    w = 1600
    cols = torch.arange(w, dtype=torch.float64)
    x = torch.sin(cols * 1.3).view(1, 1, 1, w).repeat(1, 1, 3, 1)  # one channel, 3 rows
    offset = torch.zeros(1, 18, 3, w)
    offset[:, 1::2] = 0.3  # every tap moves 0.3 px right
    mask = torch.zeros(1, 9, 3, w)
    mask[:, 4] = 1  # only the centre tap counts
    weight = torch.zeros(1, 1, 3, 3)
    weight[0, 0, 1, 1] = 1
    want = dcn_reference(x, offset, mask, weight, None)
    args = [t.to(device) for t in (x, offset, mask, weight)]
    got = modulated_deform_conv2d(args[0].half(), args[1], args[2], args[3].half(), None, backend="torch")
    error = np.abs(got.cpu().double().numpy() - want)[..., 1000:].max()
    assert error < 5e-3  # fp16 values are good to ~1e-3; fp16 coordinates would be off by ~0.3


def test_auto_and_unknown_names():
    assert resolve_backend("auto", torch.device("cpu"), torch.float32) in available_backends()
    assert "torch" in available_backends()
    with pytest.raises(ValueError, match="unknown deformable-conv backend 'fast'"):
        resolve_backend("fast", torch.device("cpu"), torch.float32)
