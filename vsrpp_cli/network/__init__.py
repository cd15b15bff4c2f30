"""The networks: BasicVSR++ and the SPyNet flow estimator it carries."""

from .basicvsrpp import BasicVSRPlusPlus
from .spynet import SPyNet

__all__ = ["BasicVSRPlusPlus", "SPyNet"]
