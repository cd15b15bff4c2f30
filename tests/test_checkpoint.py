"""Loading checkpoints: every accepted layout, strictness, and refusal of files that run code."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
from reference import official_shapes, random_official_checkpoint

from vsrpp_cli import CheckpointError, load_model, read_checkpoint


def network_state(checkpoint: dict) -> dict:
    return {k.removeprefix("generator."): v for k, v in checkpoint["state_dict"].items() if k != "step_counter"}


def assert_loads_exactly(path, checkpoint):
    model = load_model(path)
    assert not model.training
    ours = model.state_dict()
    for key, value in network_state(checkpoint).items():
        assert torch.equal(ours[key], value), key


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-format", "zip-format"])
def test_official_layout(tmp_path, legacy):
    checkpoint = random_official_checkpoint(16, 2, True, seed=3)
    path = tmp_path / "official.pth"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    assert_loads_exactly(path, checkpoint)
    read = read_checkpoint(path)
    assert read.layout == "official"
    assert read.extras == ["step_counter"]
    assert read.meta["iter"] == 600000 and read.meta["best_psnr"] == pytest.approx(32.38)
    assert read.architecture == {"mid_channels": 16, "num_blocks": 2, "is_low_res_input": True, "hr_channels": 16}


def test_architecture_is_inferred(tmp_path):
    checkpoint = random_official_checkpoint(24, 3, False)
    path = tmp_path / "same_size.pth"
    torch.save(checkpoint, path)
    model = load_model(path, dtype=torch.float64)
    assert (model.mid_channels, model.num_blocks, model.is_low_res_input) == (24, 3, False)
    assert next(model.parameters()).dtype == torch.float64


def basicsr_names(state: dict) -> dict:
    """The same weights under BasicSR's names (basicsr/archs/basicvsrpp_arch.py, spynet_arch.py)."""
    renamed = {}
    for key, value in state.items():
        match = re.fullmatch(r"spynet\.basic_module\.(\d)\.basic_module\.(\d)\.conv\.(weight|bias)", key)
        if match:
            level, conv, kind = match.groups()
            key = f"spynet.basic_module.{level}.basic_module.{2 * int(conv)}.{kind}"
        key = key.replace("upsample1.upsample_conv.", "upconv1.").replace("upsample2.upsample_conv.", "upconv2.")
        renamed[key] = value
    return renamed


def test_basicsr_layout_prefers_ema(tmp_path):
    plain = random_official_checkpoint(16, 2, True, seed=1)
    ema = random_official_checkpoint(16, 2, True, seed=2)
    path = tmp_path / "basicsr.pth"
    torch.save({"params": basicsr_names(network_state(plain)), "params_ema": basicsr_names(network_state(ema))}, path)
    assert_loads_exactly(path, ema)
    assert read_checkpoint(path).layout == "basicsr (params_ema)"

    torch.save({"params": basicsr_names(network_state(plain))}, path)
    assert_loads_exactly(path, plain)


def test_plain_state_dict(tmp_path):
    checkpoint = random_official_checkpoint(16, 2, True)
    path = tmp_path / "plain.pth"
    torch.save(network_state(checkpoint), path)
    assert_loads_exactly(path, checkpoint)
    assert read_checkpoint(path).layout == "plain"


def test_missing_key_is_named(tmp_path):
    checkpoint = random_official_checkpoint(16, 2, True)
    del checkpoint["state_dict"]["generator.conv_last.bias"]
    path = tmp_path / "missing.pth"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"missing 'conv_last\.bias'"):
        load_model(path)


def test_unexpected_key_is_named(tmp_path):
    checkpoint = random_official_checkpoint(16, 2, True)
    checkpoint["state_dict"]["generator.extra.weight"] = torch.zeros(1)
    path = tmp_path / "unexpected.pth"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"unexpected 'extra\.weight'"):
        load_model(path)


def test_wrong_shape_is_named(tmp_path):
    checkpoint = random_official_checkpoint(16, 2, True)
    checkpoint["state_dict"]["generator.conv_hr.weight"] = torch.zeros(64, 64, 5, 5)
    path = tmp_path / "shape.pth"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"conv_hr\.weight has shape \(64, 64, 5, 5\)"):
        load_model(path)


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_file_that_would_run_code_is_refused(tmp_path):
    marker = str(tmp_path / "it-ran")
    checkpoint = random_official_checkpoint(16, 2, True)
    checkpoint["meta"]["hook"] = RunsCode(marker)
    path = tmp_path / "evil.pth"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"refused: loading it would run code \(it asks for posix\.mkdir\)"):
        load_model(path)
    assert not os.path.exists(marker)


def test_truncated_and_foreign_files(tmp_path):
    checkpoint = random_official_checkpoint(16, 2, True)
    path = tmp_path / "truncated.pth"
    torch.save(checkpoint, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_model(path)

    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_model(text)

    other = tmp_path / "other_net.pth"
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, other)
    with pytest.raises(CheckpointError, match="not a BasicVSR\\+\\+ state_dict"):
        load_model(other)

    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_model(tmp_path / "absent.pth")


def test_official_key_count():
    assert len(official_shapes()) == 274
    buffers = ("spynet.mean", "spynet.std")
    assert sum(int(np.prod(s)) for k, s in official_shapes().items() if k not in buffers) == 7_322_927
