"""``lesionlab app`` and ``bench``: the web app (Streamlit) and the network benchmark."""

from __future__ import annotations

import argparse

__all__ = ["add_parsers"]


def _cmd_app(args: argparse.Namespace) -> int:
    from lesionlab.apps.webapp.launch import run_app

    return run_app(args.host, args.port, models=args.models or [], max_upload_mb=args.max_upload_mb,
                   device=args.device, project_bundles=not args.no_project_bundles)


def _cmd_bench(args: argparse.Namespace) -> int:
    from lesionlab.apps.benchmark import main_from_args

    return main_from_args(args)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``app``, ``bench``."""
    ap = sub.add_parser("app", help="start the web app (Streamlit): single analysis and test-set evaluation")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: reachable from the LAN)")
    ap.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    ap.add_argument("--models", action="append", metavar="DIR",
                    help="folder of trained bundle folders or exported archives, or one of them (repeatable)")
    ap.add_argument("--max-upload-mb", type=int, default=1024, help="largest accepted upload in MB (default 1024)")
    ap.add_argument("--device", help="cpu, cuda or auto (default: auto)")
    ap.add_argument("--no-project-bundles", action="store_true", help="offer only the bundles given with --models")
    ap.set_defaults(func=_cmd_app)

    from lesionlab.apps.benchmark import build_parser as bench_options

    bn = sub.add_parser("bench", help="benchmark every network against the machine's conv peak and its peers "
                        "(results JSON, markdown table, plots)")
    bench_options(bn).set_defaults(func=_cmd_bench)
