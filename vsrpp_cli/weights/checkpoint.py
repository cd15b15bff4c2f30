"""Reading BasicVSR++ checkpoints without running code from them.

Layouts accepted (docs/REFERENCE.md section 2):
- official OpenMMLab: {'meta': {...}, 'state_dict': {'generator.<key>': ..., 'step_counter': ...}},
  zip or legacy torch format;
- BasicSR: {'params': ...} and/or {'params_ema': ...} (EMA preferred), with BasicSR's own key
  names (basicsr/archs/basicvsrpp_arch.py) translated to the official ones;
- a plain state_dict of the network.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import CheckpointError
from ..network.basicvsrpp import BRANCHES, BasicVSRPlusPlus
from .hashing import sha256_of


@dataclass
class Checkpoint:
    state_dict: dict[str, Tensor]  # the network's keys, no prefix
    layout: str  # "official", "basicsr (params_ema)", "basicsr (params)" or "plain"
    meta: dict[str, Any] = field(default_factory=dict)
    extras: list[str] = field(default_factory=list)  # what else the file holds, by name

    @property
    def architecture(self) -> dict[str, Any]:
        return infer_architecture(self.state_dict)


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    deform_backend: str = "auto",
) -> BasicVSRPlusPlus:
    """Build the network a checkpoint describes, load it strictly, and return it in eval mode."""
    checkpoint = read_checkpoint(path)
    model = BasicVSRPlusPlus(**checkpoint.architecture, deform_backend=deform_backend)
    load_strict(model, checkpoint.state_dict, path)
    model = model.to(device=device, dtype=dtype).eval()
    model.resolve_deform_backend()
    return model


def read_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; check the path or run `vsrpp weights list`")
    raw = _torch_load(path)
    if not isinstance(raw, dict) or not raw:
        raise CheckpointError(f"{path}: holds {type(raw).__name__}, not a BasicVSR++ state_dict")
    if {"iteration", "optimizer", "scheduler"} <= raw.keys():  # train/worker.py's latest.state.pth
        weights = path.with_name("latest.pth")
        raise CheckpointError(
            f"{path}: a training run's state (optimizer and schedule at iteration {raw['iteration']}), not a model; "
            f"its weights are {weights}, and `vsrpp train`/`finetune --resume` continue from it"
        )

    if "state_dict" in raw and isinstance(raw["state_dict"], dict):
        state, layout = dict(raw["state_dict"]), "official"
        extras = [key for key in raw if key not in ("state_dict", "meta")]
        if "step_counter" in state:
            extras.append("step_counter")
            state.pop("step_counter")
        if any(key.startswith("generator.") for key in state):
            state = {key.removeprefix("generator."): value for key, value in state.items()}
    elif "params" in raw or "params_ema" in raw:
        key = "params_ema" if "params_ema" in raw else "params"
        state, layout = _from_basicsr_names(raw[key]), f"basicsr ({key})"
        extras = [name for name in raw if name != key]
    else:
        state, layout, extras = raw, "plain", []

    meta = raw.get("meta", {}) if layout == "official" else {}
    if not all(isinstance(value, Tensor) for value in state.values()):
        bad = next(k for k, v in state.items() if not isinstance(v, Tensor))
        raise CheckpointError(f"{path}: entry {bad!r} is {type(state[bad]).__name__}, not a tensor")
    return Checkpoint(state, layout, meta if isinstance(meta, dict) else {}, extras)


def infer_architecture(state: dict[str, Tensor]) -> dict[str, Any]:
    """mid_channels, num_blocks, is_low_res_input and hr_channels, read off the tensors."""
    if "feat_extract.main.0.weight" in state:
        is_low_res_input, first_conv = True, "feat_extract.main.0.weight"
    elif "feat_extract.0.weight" in state:
        is_low_res_input, first_conv = False, "feat_extract.0.weight"
    else:
        raise CheckpointError(
            "not a BasicVSR++ state_dict: no 'feat_extract.main.0.weight' or 'feat_extract.0.weight' "
            f"(first keys: {', '.join(list(state)[:3])})"
        )
    block = re.compile(rf"backbone\.{BRANCHES[0]}\.main\.2\.(\d+)\.conv1\.weight")
    block_ids = [int(m.group(1)) for key in state if (m := block.fullmatch(key))]
    if not block_ids:
        raise CheckpointError(f"not a BasicVSR++ state_dict: no residual blocks under 'backbone.{BRANCHES[0]}'")
    return {
        "mid_channels": state[first_conv].shape[0],
        "num_blocks": max(block_ids) + 1,
        "is_low_res_input": is_low_res_input,
        "hr_channels": state["conv_last.weight"].shape[1] if "conv_last.weight" in state else 64,
    }


def load_strict(model: torch.nn.Module, state: dict[str, Tensor], source: str | Path) -> None:
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_some(missing)}")
        if unexpected:
            parts.append(f"unexpected {_some(unexpected)}")
        raise CheckpointError(f"{source}: does not match BasicVSR++: {'; '.join(parts)}")
    for key, value in expected.items():
        if state[key].shape != value.shape:
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(state[key].shape)}, the network expects {tuple(value.shape)}"
            )
    model.load_state_dict(state, strict=True)


# numpy scalars and dtypes show up in the meta of files saved by mmcv's hooks (best scores).
# They rebuild plain numbers and run nothing, so the weights-only unpickler may accept them,
# under the names old (numpy.core) and new (numpy._core) pickles give them. The (function, name)
# pairs need PyTorch 2.6; 2.5's safe_globals takes functions only (seen: every load fails there).
_numpy_scalar = (getattr(np, "_core", None) or np.core).multiarray.scalar
_NUMPY_SAFE_GLOBALS = [
    (_numpy_scalar, "numpy.core.multiarray.scalar"),
    (_numpy_scalar, "numpy._core.multiarray.scalar"),
    np.dtype,
    *(type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"),
]


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(_NUMPY_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if not found:  # not a pickle the weights-only reader understands: damaged or not torch
            raise CheckpointError(
                f"{path}: not a readable torch checkpoint (damaged, or another kind of file); give a BasicVSR++ "
                "checkpoint (.pth), or fetch it again if a download was cut short"
            ) from error
        raise CheckpointError(
            f"{path}: refused: loading it would run code (it asks for {found.group(1)}); use a checkpoint "
            "that holds only tensors, or re-save the weights with torch.save(model.state_dict())"
        ) from error
    except Exception as error:  # anything else torch.load raises on bytes that are not a checkpoint
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({_first_line(error)}); give a BasicVSR++ checkpoint "
            "(.pth), or fetch it again if a download was cut short"
        ) from error


# BasicSR names its BasicVSR++ pieces differently (basicsr/archs/basicvsrpp_arch.py, spynet_arch.py).
_BASICSR_RENAMES = [
    (
        re.compile(r"^spynet\.basic_module\.(\d)\.basic_module\.([02468])\."),
        lambda m: f"spynet.basic_module.{m.group(1)}.basic_module.{int(m.group(2)) // 2}.conv.",
    ),
    (re.compile(r"^upconv1\."), lambda m: "upsample1.upsample_conv."),
    (re.compile(r"^upconv2\."), lambda m: "upsample2.upsample_conv."),
]


def _from_basicsr_names(state: dict[str, Tensor]) -> dict[str, Tensor]:
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in _BASICSR_RENAMES:
            key = pattern.sub(replacement, key)
        renamed[key] = value
    return renamed


def _some(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def describe(path: Path) -> dict[str, Any]:
    """What a checkpoint holds, for `vsrpp info`: a file that will not load is reported, not described."""
    from . import zoo  # zoo names files by checksum; it reads checkpoints too, so it is imported late

    checkpoint = read_checkpoint(path)
    arch = infer_architecture(checkpoint.state_dict)
    model = BasicVSRPlusPlus(**arch)
    load_strict(model, checkpoint.state_dict, path)
    x4 = arch["is_low_res_input"]
    sha256 = sha256_of(path)
    known = zoo.known_file(sha256)
    generic_task = "video super-resolution (4x)" if x4 else "video restoration (deblurring, denoising or decompression)"
    return {
        "file": str(path),
        "size_bytes": path.stat().st_size,
        "sha256": sha256,
        "zoo_model": known.name if known else None,
        "architecture": f"BasicVSR++ C{arch['mid_channels']}/N{arch['num_blocks']}"
        + ("" if arch["hr_channels"] == 64 else f" (full-size convs {arch['hr_channels']} wide)")
        + ", "
        + ("4x upscaling" if x4 else "same-size output"),
        "mid_channels": arch["mid_channels"],
        "num_blocks": arch["num_blocks"],
        "hr_channels": arch["hr_channels"],
        "scale": 4 if x4 else 1,
        "parameters": sum(p.numel() for p in model.parameters()),
        "task": known.task if known else generic_task,
        "layout": checkpoint.layout,
        "also_in_file": checkpoint.extras,
        "meta": checkpoint.meta,
    }
