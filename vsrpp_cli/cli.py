"""The `vsrpp` command line: parses, calls the library, reports. Nothing else lives here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .checkpoint import CheckpointError, infer_architecture, load_strict, read_checkpoint, sha256_of
from .network import BasicVSRPlusPlus

app = typer.Typer(
    name="vsrpp",
    help="Sharper video with BasicVSR++: 4x video super-resolution and same-size restoration.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
stdout = Console()
stderr = Console(stderr=True)
USER_ERRORS = (CheckpointError,)
_state = {"debug": False}


def _show_version(value: bool) -> None:
    if value:
        print(f"vsrpp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option("--version", "-V", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show a full traceback on errors.")] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def info(
    checkpoint: Annotated[Path, typer.Argument(help="A BasicVSR++ checkpoint (.pth): official, BasicSR or plain.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts as JSON on stdout.")] = False,
) -> None:
    """What a checkpoint holds: architecture, parameter count, task, layout and metadata.

    The file is read with torch.load(weights_only=True): nothing in it runs.
    """
    facts = describe_checkpoint(checkpoint)
    if as_json:
        print(json.dumps(facts, indent=2, default=str))
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in facts.items():
        if key == "meta":
            value = ", ".join(f"{k}={_short(v)}" for k, v in value.items()) or "(none)"
        elif isinstance(value, list):
            value = ", ".join(value) or "(none)"
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        table.add_row(key.replace("_", " "), str(value))
    stdout.print(table)


def describe_checkpoint(path: Path) -> dict[str, Any]:
    checkpoint = read_checkpoint(path)
    arch = infer_architecture(checkpoint.state_dict)
    model = BasicVSRPlusPlus(**arch)
    load_strict(model, checkpoint.state_dict, path)  # a file that will not load is reported, not described
    x4 = arch["is_low_res_input"]
    return {
        "file": str(path),
        "size_bytes": path.stat().st_size,
        "sha256": sha256_of(path),
        "architecture": f"BasicVSR++ C{arch['mid_channels']}/N{arch['num_blocks']}, "
        + ("4x upscaling" if x4 else "same-size output"),
        "mid_channels": arch["mid_channels"],
        "num_blocks": arch["num_blocks"],
        "scale": 4 if x4 else 1,
        "parameters": sum(p.numel() for p in model.parameters()),
        "task": "video super-resolution (4x)" if x4 else "video restoration (deblurring, denoising or decompression)",
        "layout": checkpoint.layout,
        "also_in_file": checkpoint.extras,
        "meta": checkpoint.meta,
    }


def _short(value: Any, limit: int = 60) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main() -> None:
    try:
        app()
    except USER_ERRORS as error:
        if _state["debug"]:
            raise
        stderr.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
