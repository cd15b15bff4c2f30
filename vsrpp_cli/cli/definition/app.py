"""What `vsrpp` accepts: every command and option, each option declared once (cli/options.py)
and checked as it is parsed (choices, ranges), so a wrong value is refused before any work starts.
Each command hands its values to cli/core.py, which does the work (`Namespace(**locals())`: the
command's parameters by name, as httpie's parser hands its namespace to its core). Nothing here
imports torch: `vsrpp --help` and `--version` stay quick.

This module is the application itself; upscaling.py and models.py declare its commands.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from ... import __version__
from ..core import state
from ..options import flag

COMMAND_ORDER = ("info", "upscale", "preview", "eval", "train", "finetune", "bench", "weights")


class _QuietHelpFlag:
    """--help takes no value: help shows none for it (typer would print `<bool>`)."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class Command(_QuietHelpFlag, TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:  # an argument named by its metavar needs no Python type beside it
            if param.param_type_name == "argument" and param.metavar:
                param.display_type_rich = lambda ctx: None


class Group(_QuietHelpFlag, TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        """--help lists the commands in the order a user meets them, whichever module declares them."""
        order = {name: place for place, name in enumerate(COMMAND_ORDER)}
        return sorted(super().list_commands(ctx), key=lambda name: order.get(name, len(order)))


app = typer.Typer(
    name="vsrpp",
    cls=Group,
    help="Sharper video with BasicVSR++: 4x video super-resolution and same-size restoration.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        print(f"vsrpp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", "-V", metavar="", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = None,
    debug: Annotated[bool, flag("Show a full traceback on errors.", "--debug")] = False,
) -> None:
    state.debug = debug
