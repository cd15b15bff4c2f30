"""What `vsrpp` accepts (app.py), its commands on video (upscaling.py) and on models (models.py)."""

from . import models, upscaling  # noqa: F401 (each declares its commands on the app)
from .app import app, state

__all__ = ["app", "state"]
