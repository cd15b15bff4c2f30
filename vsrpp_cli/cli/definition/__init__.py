"""What `vsrpp` accepts (app.py), its commands on video (upscaling.py) and on models (models.py)."""

import functools

import typer

from . import models, upscaling  # noqa: F401 (each declares its commands on the app)
from .app import app, state


@functools.cache
def click_group() -> typer.core.TyperGroup:
    """The click group typer builds from `app` and its commands' signatures: 70 ms of
    introspection (measured on the CPU of benchmarks/RESULTS.md), once a process rather than at
    each call: the library checks options with it, and a program or a test suite may run many
    commands in one process."""
    return typer.main.get_command(app)


__all__ = ["app", "click_group", "state"]
