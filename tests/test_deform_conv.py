"""Every deformable-conv backend against the DCNv2 formula evaluated in float64."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from reference import dcn_reference

from vsrpp_cli.network import deform_conv
from vsrpp_cli.network.deform_conv import (
    BACKENDS,
    available_backends,
    backend_works,
    modulated_deform_conv2d,
    passes_probe,
    resolve_backend,
)
from vsrpp_cli.weights.checkpoint import load_model

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
    """The backends to hold to the formula here. On the CPU the Triton kernel runs in Triton's
    interpreter without its probe (16 s interpreted): these tests are its check. Its compiled
    form for each GPU target: tests/test_kernel_targets.py (the slow matrix .ci/run runs)."""
    if device == "cpu":
        interpreted = ["triton"] if os.environ.get("TRITON_INTERPRET") == "1" else []
        return interpreted + [
            name for name in BACKENDS if name != "triton" and backend_works(name, "cpu", torch.float32)
        ]
    return available_backends(device) if torch.cuda.is_available() else []


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
    if backend == "triton" and device == "cpu":  # the kernel itself, interpreted: its probe would take 16 s
        got = deform_conv._IMPLEMENTATIONS["triton"](*args, 1).cpu().double().numpy()
    else:
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
    picked = resolve_backend("auto", torch.device("cpu"), torch.float32)
    assert picked != "triton" and backend_works(picked, "cpu", torch.float32)
    assert backend_works("torch", "cpu", torch.float32)
    with pytest.raises(ValueError, match="unknown deformable-conv backend 'fast'"):
        resolve_backend("fast", torch.device("cpu"), torch.float32)


def test_auto_never_picks_the_interpreter_on_cpu():
    assert resolve_backend("auto", torch.device("cpu"), torch.float16) != "triton"


# ----------------------------------------------------------------------------- the precision trap
def _positions_in_feature_dtype(x, offset, mask, weight, bias, padding):
    """What torchvision and mmcv do when fed half-precision inputs: sampling positions (and the
    normalised grid) in the feature dtype. Here through grid_sample with an fp16 grid."""
    n, c_in, h, w = x.shape
    groups = offset.shape[1] // 18
    features = x.reshape(n * groups, c_in // groups, h, w)
    ys = torch.arange(h, dtype=x.dtype).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=x.dtype).view(1, 1, 1, w)
    taps = []
    for k in range(9):
        i, j = divmod(k, 3)
        dy, dx = offset[:, 2 * k :: 18].to(x.dtype), offset[:, 2 * k + 1 :: 18].to(x.dtype)
        grid = torch.stack([2 * (xs - padding + j + dx) / (w - 1) - 1, 2 * (ys - padding + i + dy) / (h - 1) - 1], -1)
        tap = torch.nn.functional.grid_sample(features, grid.view(n * groups, h, w, 2), align_corners=True)
        taps.append(tap.view(n, groups, -1, h, w) * mask[:, k::9].to(x.dtype).unsqueeze(2))
    columns = torch.stack(taps, dim=3).view(n, c_in * 9, h * w).float()
    out = torch.einsum("ok,nkp->nop", weight.float().reshape(weight.shape[0], -1), columns).view(n, -1, h, w)
    return (out + bias.float().view(1, -1, 1, 1)).to(x.dtype)


def test_probe_rejects_half_precision_positions():
    """The trap (docs/REFERENCE.md section 7): a kernel that computes positions in fp16 passes a
    small probe but not ours, which samples past x = 1024; fp32 positions with fp16 features pass."""
    with pytest.warns(UserWarning, match="disagrees with the reference"):
        assert not passes_probe(_positions_in_feature_dtype, "cpu", torch.float16)
    assert passes_probe(_positions_in_feature_dtype, "cpu", torch.float32)
    assert passes_probe(deform_conv._IMPLEMENTATIONS["torch"], "cpu", torch.float16)
    # The old 6x5 probe could not tell: positions below 8 are exact in fp16.
    x, offset, mask, weight, bias = problem(n=1, c_in=4, c_out=3, h=6, w=5, groups=2, reach=3.0)
    small = _positions_in_feature_dtype(x.half(), offset, mask, weight.half(), bias.half(), 1).double().numpy()
    want = dcn_reference(x.half().float(), offset, mask, weight.half().float(), bias.half().float())
    assert np.abs(small - want).max() < 2e-2 * np.abs(want).max()


# ----------------------------------------------------------------------------- the Triton kernel
def triton_kernel():
    pytest.importorskip("triton")
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and not interpreting")
    from vsrpp_cli.network.deform_conv_triton import triton_deform_conv2d

    return triton_deform_conv2d


def on_triton_device(*tensors):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return [None if t is None else t.to(device) for t in tensors]


@pytest.mark.parametrize(
    "shape",
    [
        dict(n=2, c_in=32, c_out=8, h=5, w=7, groups=16),  # 2 channels per group
        dict(n=1, c_in=4, c_out=3, h=5, w=7, groups=2, reach=12.0),  # most taps outside the image
        dict(n=1, c_in=24, c_out=20, h=4, w=6, groups=4),  # 6 channels per group: padded to 8
        dict(n=1, c_in=128, c_out=64, h=3, w=5, groups=16),  # the network's own DCN: 2C -> C
        dict(n=1, c_in=256, c_out=128, h=2, w=3, groups=16),  # the C128 models (NTIRE)
    ],
    ids=["16-groups", "outside", "odd-group-width", "network", "network-c128"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_matches_the_formula(shape, dtype):
    kernel = triton_kernel()
    x, offset, mask, weight, bias = problem(**shape)
    x, weight, bias = x.to(dtype), weight.to(dtype), bias.to(dtype)
    want = dcn_reference(x.float(), offset, mask, weight.float(), bias.float())
    got = kernel(*on_triton_device(x, offset, mask, weight, bias)).cpu()
    assert got.dtype == dtype and got.shape == want.shape
    error = np.abs(got.double().numpy() - want).max()
    assert error < (1e-5 if dtype == torch.float32 else 2e-3 * np.abs(want).max())


@pytest.mark.cuda
def test_triton_bf16_on_the_gpu():
    """bf16 only on a GPU: Triton's interpreter computes bf16 wrongly (docs/REFERENCE.md s.7)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    kernel = triton_kernel()
    x, offset, mask, weight, bias = problem(n=2, c_in=128, c_out=64, h=19, w=45, groups=16)
    x, weight, bias = x.bfloat16(), weight.bfloat16(), bias.bfloat16()
    want = dcn_reference(x.float(), offset, mask, weight.float(), bias.float())
    got = kernel(*on_triton_device(x, offset, mask, weight, bias)).cpu()
    assert got.dtype == torch.bfloat16
    assert np.abs(got.double().numpy() - want).max() < 2e-2 * np.abs(want).max()


def test_triton_far_positions_keep_fp32_precision():
    """Offsets reaching x ~ 1100 on a map 1200 wide, pattern sin(1.3 x): an fp16 position (0.5 px
    apart there) would be off by up to 0.3 in value; fp16 features alone cost ~1e-3."""
    kernel = triton_kernel()
    w = 1200
    cols = torch.arange(w, dtype=torch.float64)
    x = torch.sin(cols * 1.3).view(1, 1, 1, w).repeat(1, 16, 2, 1).float()
    gen = torch.Generator().manual_seed(1)
    offset = torch.zeros(1, 18, 2, 8)
    offset[:, 1::2] = 1090 + 8 * torch.rand(1, 9, 2, 8, generator=gen)  # dx: far right, fractional
    offset[:, 0::2] = torch.rand(1, 9, 2, 8, generator=gen) - 0.5
    mask = torch.rand(1, 9, 2, 8, generator=gen)
    weight = torch.randn(16, 16, 3, 3, generator=gen) / 12
    want = dcn_reference(x.half().float(), offset, mask, weight.half().float(), None)
    got = kernel(*on_triton_device(x.half(), offset, mask, weight.half(), None)).cpu()
    assert np.abs(got.double().numpy() - want).max() < 5e-3


def test_triton_zero_mask_gives_the_bias_and_layouts_agree():
    kernel = triton_kernel()
    x, offset, mask, weight, bias = problem(n=1, c_in=32, c_out=16, h=4, w=9, groups=16)
    out = kernel(*on_triton_device(x, offset, torch.zeros_like(mask), weight, bias)).cpu()
    assert torch.equal(out, bias.view(1, -1, 1, 1).expand_as(out))
    channels_last = x.contiguous(memory_format=torch.channels_last)
    a = kernel(*on_triton_device(x, offset, mask, weight, bias)).cpu()
    b = kernel(*on_triton_device(channels_last, offset, mask, weight, bias))
    assert b.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(a, b.cpu())


def test_triton_backend_through_the_operator():
    """The backend name reaches the kernel through the one dispatched operator (the backend
    admitted as a model's load admits it: its probe, 16 s interpreted, is tested apart)."""
    triton_kernel()
    x, offset, mask, weight, bias = problem(n=1, c_in=32, c_out=8, h=3, w=5, groups=16)
    args = list(on_triton_device(x, offset, mask, weight, bias))
    deform_conv._ADMITTED.add(("triton", str(args[0].device), args[0].dtype))
    got = modulated_deform_conv2d(*args, backend="triton").cpu().double().numpy()
    assert np.abs(got - dcn_reference(x, offset, mask, weight, bias)).max() < 1e-5


def _reads_memory_as_contiguous(x, offset, mask, weight, bias, padding):
    """What mmcv's kernel does with a view: it walks the storage as if the tensor were contiguous."""

    def as_if_contiguous(t):
        strides = torch.empty(t.shape).stride()
        return torch.as_strided(t, t.shape, strides, t.storage_offset())

    plain = deform_conv._IMPLEMENTATIONS["plain"]
    return plain(as_if_contiguous(x), as_if_contiguous(offset), as_if_contiguous(mask), weight, bias, padding)


def test_the_probe_feeds_the_layouts_the_network_feeds():
    """A kernel that misreads views passes a probe of contiguous tensors (as it did with mmcv, 0.10
    off inside the network) and fails ours; the backends we ship pass in every layout."""
    x, offset, mask, weight, bias = deform_conv.probe_problem()
    fine = deform_conv._IMPLEMENTATIONS["plain"](x, offset, mask, weight, bias, 1)
    assert torch.equal(_reads_memory_as_contiguous(x, offset, mask, weight, bias, 1), fine)  # contiguous: right
    with pytest.warns(UserWarning, match="disagrees with the reference"):
        assert not passes_probe(_reads_memory_as_contiguous, "cpu", torch.float32)
    for name in ("torch", "plain"):
        for dtype in (torch.float32, torch.bfloat16):
            assert passes_probe(deform_conv._IMPLEMENTATIONS[name], "cpu", dtype), (name, dtype)


_PLAIN = deform_conv._IMPLEMENTATIONS["plain"]


def _first_group_channels_only(x, offset, mask, weight, bias, padding):
    """A kernel that is right while a group holds at most 2 channels (the small probe's), and
    drops the rest: a configuration bug that shows only at the network's sizes."""
    groups = offset.shape[1] // 18
    per_group = x.shape[1] // groups
    kept = torch.zeros(per_group, dtype=torch.bool)
    kept[:2] = True
    return _PLAIN(x * kept.repeat(groups).view(1, -1, 1, 1).to(x.dtype), offset, mask, weight, bias, padding)


def test_the_probe_runs_at_the_networks_own_sizes(monkeypatch, official_checkpoint):
    """The backend is probed at the sizes the network launches it with (2C channels in 16 groups,
    C out), not only the small default: a kernel wrong only there passes the small probe, fails
    the real one, and a model asking for it is refused when it loads."""
    real = deform_conv.ProbeShape(channels=64, groups=16, out_channels=32)  # C32: 4 channels a group
    assert passes_probe(_first_group_channels_only, "cpu", torch.float32)  # the small probe: 2 channels a group
    with pytest.warns(UserWarning, match="disagrees with the reference"):
        assert not passes_probe(_first_group_channels_only, "cpu", torch.float32, shape=real)
    assert passes_probe(_PLAIN, "cpu", torch.float32, shape=real)

    monkeypatch.setitem(deform_conv._IMPLEMENTATIONS, "plain", _first_group_channels_only)
    deform_conv.backend_works.cache_clear()
    try:
        path, _ = official_checkpoint(32, 1, True, seed=3)
        with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="'plain' is not usable"):
            load_model(path, deform_backend="plain")
    finally:
        deform_conv.backend_works.cache_clear()


def test_a_loaded_model_never_probes_inside_its_forward(official_checkpoint):
    """The model probes its backend at its own sizes when it loads; a forward must not probe
    again (at another size, or at all): a probe inside a CUDA graph capture breaks the capture."""
    path, _ = official_checkpoint(16, 1, True, seed=3)
    model = load_model(path, deform_backend="plain")
    probes = deform_conv.backend_works.cache_info()
    with torch.no_grad():
        model(torch.rand(1, 3, 3, 64, 64))
    after = deform_conv.backend_works.cache_info()
    assert (after.hits, after.misses) == (probes.hits, probes.misses)
