"""The ``skyseg`` command: one sub-command per stage.

Each stage module provides ``CLI_HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Stage modules import TensorFlow only inside the
functions that need it, so ``skyseg --help`` and every error message stay fast.

Exit status: 0 success; 1 some inputs failed (the others were processed and
the failures are listed at the end); 2 bad usage or a fatal error; 130
interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from skyseg.errors import SkysegError
from skyseg.log import configure_logging

__all__ = ["main", "build_parser", "exit_status", "STAGES"]

#: Stage name -> module. The order is the workflow's.
STAGES = {
    "demo-data": "skyseg.demo.synthetic",
    "previews": "skyseg.labels.previews",
    "masks": "skyseg.labels.masks",
    "build-dataset": "skyseg.data.dataset",
    "train": "skyseg.training.train",
    "predict": "skyseg.predict.predictor",
    "evaluate": "skyseg.evaluation.evaluate",
    "check": "skyseg.evaluation.check",
    "pipeline": "skyseg.cli.pipeline",
}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows an option's default unless its help already speaks of it or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, argparse.SUPPRESS)
                or action.option_strings == [] or isinstance(default, bool)):
            return text
        return f"{text} (default: %(default)s)"


def _description(module) -> str:
    doc = (module.__doc__ or "").strip()
    return doc.split("\n\n")[0] if doc else ""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``skyseg`` command with every stage."""
    from skyseg import __version__
    parser = argparse.ArgumentParser(
        prog="skyseg",
        description="Sky segmentation for photographs and 8K HDR panoramas: label previews, "
        "build a patch dataset, train a U-Net, predict and evaluate sky masks.",
        epilog="Run 'skyseg STAGE --help' for the options of a stage. Exit status: 0 ok, "
        "1 some inputs failed (listed at the end), 2 bad usage or fatal error.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"skyseg {__version__}")
    subparsers = parser.add_subparsers(dest="stage", metavar="STAGE", title="stages")
    for name, module_name in STAGES.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name, help=module.CLI_HELP, description=_description(module),
            formatter_class=_Formatter,
        )
        verbosity = sub.add_mutually_exclusive_group()
        verbosity.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
        verbosity.add_argument("-q", "--quiet", action="store_true",
                               help="log warnings and errors only")
        module.add_arguments(sub)
        sub.set_defaults(_module=module_name, _prog=f"skyseg {name}")
    return parser


def run_stage(module_name: str, args: argparse.Namespace, prog: str) -> int:
    """Run one stage's ``run(args)`` and turn errors into one line and a status."""
    configure_logging(-1 if getattr(args, "quiet", False) else int(getattr(args, "verbose", 0)))
    return exit_status(prog, lambda: importlib.import_module(module_name).run(args))


def exit_status(prog: str, action: Callable[[], int | None]) -> int:
    """Call ``action()``; its status, or 2 after one error line, or 130 when interrupted.

    The error handling of every ``skyseg`` stage (the pipeline's steps included):
    a :class:`~skyseg.errors.SkysegError` becomes ``PROG: error: MESSAGE`` on stderr.

    Example:
        >>> exit_status("skyseg demo", lambda: 1)
        1
    """
    try:
        return int(action() or 0)
    except SkysegError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``skyseg`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "stage", None):
        parser.print_help()
        return 2
    return run_stage(args._module, args, args._prog)


def stage_main(stage: str, argv: list[str] | None = None) -> int:
    """``python -m skyseg.<stage>``: the same arguments as ``skyseg <stage>``."""
    return main([stage, *(sys.argv[1:] if argv is None else argv)])
