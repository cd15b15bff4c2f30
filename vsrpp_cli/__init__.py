"""vsrpp: video super-resolution and restoration with BasicVSR++.

The library's entry points load lazily, so that `vsrpp --help` does not import torch.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vsrpp")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0.0.0+unknown"

_LAZY = {
    "BasicVSRPlusPlus": "vsrpp_cli.network",
    "CheckpointError": "vsrpp_cli.errors",
    "Summary": "vsrpp_cli.run.pipeline",
    "Upscaler": "vsrpp_cli.api",
    "VsrppError": "vsrpp_cli.errors",
    "upscale": "vsrpp_cli.api",
    "load_model": "vsrpp_cli.weights.checkpoint",
    "read_checkpoint": "vsrpp_cli.weights.checkpoint",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vsrpp_cli' has no attribute {name!r}")


__all__ = [
    "BasicVSRPlusPlus",
    "CheckpointError",
    "Summary",
    "Upscaler",
    "VsrppError",
    "__version__",
    "load_model",
    "read_checkpoint",
    "upscale",
]
