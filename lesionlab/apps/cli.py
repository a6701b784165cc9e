"""The ``lesionlab`` command line: ``lesionlab <command> --help`` documents each command.

The sub-commands (handler + arguments) live in :mod:`lesionlab.apps.commands`, one module per group; this module
assembles them into one parser and runs the chosen handler.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lesionlab import __version__
from lesionlab.apps.commands import data, deploy, tools, train
from lesionlab.errors import LesionlabError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lesionlab", description="lesionlab: MONAI bundles for lesion segmentation.")
    p.add_argument("--version", action="version", version=f"lesionlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    # in the order of ``lesionlab --help``: demo, synth, datalist, datalist-glomeruli, tile, wsi, run, experiments,
    # export-ts, export, verify, infer, app, bench
    train.add_demo_parser(sub)
    data.add_parsers(sub)
    deploy.add_wsi_parser(sub)
    train.add_parsers(sub)
    deploy.add_parsers(sub)
    tools.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (LesionlabError, ValueError, OSError) as err:  # user errors: bad values, unwritable paths (fuzz-tested)
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
