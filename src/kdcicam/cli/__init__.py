"""The `kdcicam` command: this package holds the entry point (:func:`main`) and one small module per
subcommand (``kdcicam.cli.<name>``), each thin over the library and loaded only when that command
runs, so `kdcicam --help` and the data commands start fast.

Every subcommand module exposes ``add_arguments(parser)`` (cheap, no heavy imports) and
``run(args) -> int``. Errors caused by input (:class:`~kdcicam.errors.KdcicamError`) are printed
as one line with exit code 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import KdcicamError

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "data": ("kdcicam.cli.data", "make datasets: `data synthetic`, `data cub`, `data import` (your own images)"),
    "init": ("kdcicam.cli.init", "write a commented starting config for a dataset"),
    "train": ("kdcicam.cli.train", "train CAM, CI-CAM or KD-CI-CAM (resumable)"),
    "evaluate": ("kdcicam.cli.evaluate", "evaluate a run or checkpoint on a split"),
    "score": ("kdcicam.cli.score", "score saved CAMs (.npy) with the wsolevaluation protocol"),
    "baseline": ("kdcicam.cli.baseline", "score maps that need no model: the centre-Gaussian floor, the oracle CAM"),
    "localize": ("kdcicam.cli.localize", "boxes and heatmaps for your own images"),
    "export": ("kdcicam.cli.export", "export a trained run to ONNX (run it without PyTorch)"),
    "app": ("kdcicam.cli.app", "a local page: upload photos, heatmaps, boxes, a threshold slider, downloads"),
    "report": ("kdcicam.cli.report", "one self-contained HTML report comparing runs"),
    "demo": ("kdcicam.cli.demo", "the whole pipeline on the embedded synthetic data"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdcicam",
        description="Weakly-supervised object localization: CAM, CI-CAM and KD-CI-CAM.",
    )
    parser.add_argument("--version", action="version", version=f"kdcicam {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as e:
                if e.name != module_name:
                    raise
                continue  # not built yet in this checkout
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def entry() -> int:
    """The ``kdcicam`` process (console script and ``python -m kdcicam``): :func:`main`, then every object
    left is frozen out of the garbage collector. The interpreter's last collection at exit would walk them
    all only to free what the process is about to give back: 41 -> 12 ms from the end of ``kdcicam score``
    to the process's exit (medians of 9). :func:`main` itself, called in a process that goes on, leaves
    the collector alone."""
    import gc

    code = main(own_process=True)
    gc.freeze()
    return code


def main(argv: Sequence[str] | None = None, *, own_process: bool = False) -> int:
    """Run one command; returns its exit code. ``own_process``: the process is the command's (the ``kdcicam``
    entry point), so a command may tune it (``score`` loads numpy with one OpenBLAS thread); called from a
    process that goes on, nothing process-wide outlives the command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in SUBCOMMANDS else None)
    args, unknown = parser.parse_known_args(argv)
    # config overrides (key.sub=value) may come anywhere on the line, also after options
    if unknown and hasattr(args, "overrides") and all("=" in u and not u.startswith("-") for u in unknown):
        args.overrides = list(args.overrides or []) + unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args._own_process = own_process
    if getattr(args, "_module", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args._module.run(args) or 0)
    except KdcicamError as e:
        if args.debug:
            raise
        print(f"kdcicam {args.command}: error: {e}", file=sys.stderr)
        return int(getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        print(f"kdcicam {args.command}: interrupted", file=sys.stderr)
        return 130
