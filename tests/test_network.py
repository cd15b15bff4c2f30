"""The network against the float64 reference built from REFERENCE.md (tests/reference.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reference import Reference, official_shapes

from vsrpp_cli import BasicVSRPlusPlus, load_model

TOLERANCE = 1e-4  # fp32 against float64, the bar the core issue sets


def test_default_has_the_published_parameter_count():
    assert sum(p.numel() for p in BasicVSRPlusPlus().parameters()) == 7_322_927


@pytest.mark.parametrize(
    "mid, blocks, x4",
    [(64, 7, True), (128, 25, True), (128, 25, False), (64, 15, False)],
    ids=["reds4", "ntire-vsr", "ntire-decompress", "deblur"],
)
def test_state_dict_is_the_official_one(mid, blocks, x4):
    ours = BasicVSRPlusPlus(mid, blocks, is_low_res_input=x4).state_dict()
    official = official_shapes(mid, blocks, x4)
    assert list(ours) == list(official)  # same keys, same order
    assert {k: tuple(v.shape) for k, v in ours.items()} == official


def run(model, clip):
    with torch.no_grad():
        return model(clip)


def test_x4_matches_reference_on_real_frames(official_checkpoint, video_clip):
    path, checkpoint = official_checkpoint(64, 7, True)
    clip = video_clip(5, 64, 64)
    ours = run(load_model(path), clip)
    want = Reference(checkpoint)(clip)
    assert ours.shape == (1, 5, 3, 256, 256)
    assert (ours.double() - want).abs().max() <= TOLERANCE


def test_mirror_extended_clip_takes_the_shortcut_and_matches(official_checkpoint, video_clip):
    path, checkpoint = official_checkpoint(64, 7, True)
    half = video_clip(3, 64, 64)
    clip = torch.cat([half, half.flip(1)], dim=1)
    model = load_model(path)
    spynet_calls = []
    model.spynet.register_forward_hook(lambda *args: spynet_calls.append(1))
    ours = run(model, clip)
    # The reference computes the forward flows with SPyNet: the shortcut must give the same.
    want = Reference(checkpoint)(clip, mirror_shortcut=False)
    assert len(spynet_calls) == 1
    assert (ours.double() - want).abs().max() <= TOLERANCE

    spynet_calls.clear()
    run(model, torch.cat([half, half], dim=1))  # even length, not mirrored
    assert len(spynet_calls) == 2


def test_same_size_variant_matches_reference(official_checkpoint, video_clip):
    path, checkpoint = official_checkpoint(32, 3, False)
    clip = video_clip(3, 256, 256)
    ours = run(load_model(path), clip)
    want = Reference(checkpoint)(clip)
    assert ours.shape == clip.shape
    assert (ours.double() - want).abs().max() <= TOLERANCE


@pytest.mark.parametrize(
    "x4, height, width",
    [(True, 20, 36), (True, 67, 45), (True, 64, 1), (False, 130, 97), (False, 258, 263)],
)
def test_small_and_odd_frames_are_padded_then_cropped(official_checkpoint, video_clip, x4, height, width):
    """Padding is replicate, bottom and right, to the network's minimum; the output is cropped."""
    path, checkpoint = official_checkpoint(16, 2, x4)
    clip = video_clip(3, max(height, 2), max(width, 2))[..., :height, :width]
    ours = run(load_model(path), clip)
    scale = 4 if x4 else 1
    assert ours.shape == (1, 3, 3, height * scale, width * scale)

    need = 64 if x4 else 256
    pad_h = max(need, -(-height // (1 if x4 else 4)) * (1 if x4 else 4)) - height
    pad_w = max(need, -(-width // (1 if x4 else 4)) * (1 if x4 else 4)) - width
    padded = F.pad(clip[0], (0, pad_w, 0, pad_h), mode="replicate")[None]
    want = Reference(checkpoint)(padded)[..., : height * scale, : width * scale]
    assert (ours.double() - want).abs().max() <= TOLERANCE


def test_valid_sizes_are_not_padded():
    assert BasicVSRPlusPlus(16, 1).padding_for(64, 64) == (0, 0)
    assert BasicVSRPlusPlus(16, 1).padding_for(63, 100) == (1, 0)
    assert BasicVSRPlusPlus(16, 1, is_low_res_input=False).padding_for(256, 260) == (0, 0)
    assert BasicVSRPlusPlus(16, 1, is_low_res_input=False).padding_for(257, 300) == (3, 0)


def test_single_frame_and_batches(official_checkpoint, video_clip):
    path, checkpoint = official_checkpoint(16, 2, True)
    model = load_model(path)
    clip = video_clip(3, 64, 64)
    assert run(model, clip[:, :1]).shape == (1, 1, 3, 256, 256)
    batch = torch.cat([clip, clip.flip(-1)])
    out = run(model, batch)
    assert (out[1].double() - Reference(checkpoint)(clip.flip(-1))[0]).abs().max() <= TOLERANCE


def test_deterministic(official_checkpoint, video_clip):
    path, _ = official_checkpoint(16, 2, True)
    clip = video_clip(4, 64, 72)
    first = run(load_model(path), clip)
    model = load_model(path)
    assert torch.equal(first, run(model, clip))
    assert torch.equal(first, run(model, clip))


def test_reference_checkpoint_moves_offsets_outside_the_image(official_checkpoint, video_clip):
    """Guards the tests themselves: random offset heads must reach outside a 64x64 frame."""
    _, checkpoint = official_checkpoint(64, 7, True)
    model = BasicVSRPlusPlus()
    state = {k.removeprefix("generator."): v for k, v in checkpoint["state_dict"].items() if k != "step_counter"}
    model.load_state_dict(state)
    head = model.deform_align["backward_1"].conv_offset
    cond = torch.rand(1, 3 * 64 + 4, 64, 64)
    with torch.no_grad():
        residue = 10 * torch.tanh(head(cond)[:, :288])
    assert residue.abs().max() > 8


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(official_checkpoint, video_clip, dtype):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    path, _ = official_checkpoint(64, 7, True)
    clip = video_clip(5, 64, 64)
    want = run(load_model(path), clip)
    got = run(load_model(path, device="cuda", dtype=dtype), clip.cuda().to(dtype)).float().cpu()
    assert torch.isfinite(got).all()
    tolerance = {torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
    assert (got - want).abs().max() <= tolerance
