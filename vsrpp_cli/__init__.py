"""vsrpp: video super-resolution and restoration with BasicVSR++."""

from importlib.metadata import PackageNotFoundError, version

from .checkpoint import CheckpointError, load_model, read_checkpoint
from .network import BasicVSRPlusPlus

try:
    __version__ = version("vsrpp")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["BasicVSRPlusPlus", "CheckpointError", "__version__", "load_model", "read_checkpoint"]
