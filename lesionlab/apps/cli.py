"""The ``lesionlab`` command line: ``lesionlab <command> --help`` documents each command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lesionlab import __version__
from lesionlab.errors import LesionlabError

__all__ = ["main", "build_parser"]


def _cmd_demo(args: argparse.Namespace) -> int:
    from lesionlab.apps.demo import run_demo

    run_demo(args.workdir, n_subjects=args.n, epochs=args.epochs, slices_per_volume=args.slices_per_volume,
             full_width=args.full_width, seed=args.seed)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from lesionlab.data.synthetic import synth_atlas

    subjects = synth_atlas(args.out, n=args.n, seed=args.seed, layout=args.layout, progress=not args.quiet)
    vols = [s["lesion_ml"] for s in subjects]
    print(f"wrote {len(subjects)} synthetic {args.layout} subjects to {args.out} "
          f"(lesion volumes {min(vols):.1f}-{max(vols):.1f} mL); see NOTICE_MNI152.txt there")
    return 0


def _cmd_datalist(args: argparse.Namespace) -> int:
    from lesionlab.pipelines.datalist import build_datalist

    d = build_datalist(args.root, args.out, version=args.version, val_fraction=args.val_fraction, folds=args.folds,
                       seed=args.seed, strict=not args.skip_incomplete)
    n_val = len(d.get("validation", []))
    print(f"{args.out}: {len(d['training']) + n_val} subjects, {len(d['training'])} training, {n_val} validation"
          + (f", {args.folds} folds" if args.folds else ""))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import ast

    from lesionlab.apps.bundle import run_bundle

    overrides = {}
    for item in args.set or []:
        if "=" not in item:
            raise LesionlabError(f"--set expects ID=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    if args.dataset_dir:
        overrides["dataset_dir"] = args.dataset_dir
    run_bundle(args.bundle, args.mode, bundle_root=args.bundle_root, **overrides)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from lesionlab.apps.bundle import bundle_path, export_torchscript

    print(export_torchscript(bundle_path(args.bundle)))
    return 0


def _cmd_experiments(args: argparse.Namespace) -> int:
    from lesionlab.apps.experiments import run_table

    extra = {"slices_per_volume": args.slices_per_volume} if args.slices_per_volume else {}
    paths = run_table(args.table, args.datalist, args.workdir, epochs=args.epochs, quick=args.quick, extra=extra)
    print(open(paths["table"]).read())
    for k, v in paths.items():
        print(f"{k:8s} {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lesionlab", description="lesionlab: MONAI bundles for lesion segmentation.")
    p.add_argument("--version", action="version", version=f"lesionlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="synthesise data, train, evaluate, infer and export the D-UNet bundle on a CPU")
    d.add_argument("--workdir", default="demo_output", help="output folder (default: demo_output)")
    d.add_argument("--n", type=int, default=12, help="synthetic subjects (default: 12)")
    d.add_argument("--epochs", type=int, default=6, help="training epochs (default: 6)")
    d.add_argument("--slices-per-volume", type=int, default=16, help="2.5D samples per volume and epoch (default: 16)")
    d.add_argument("--full-width", action="store_true", help="train the paper's full-width D-UNet (slower)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)

    s = sub.add_parser("synth", help="write embedded synthetic data sets")
    ssub = s.add_subparsers(dest="dataset", required=True)
    sa = ssub.add_parser("atlas", help="ATLAS-layout T1 MRI with stroke-like lesions, from the MNI152 template")
    sa.add_argument("--out", required=True, help="output folder")
    sa.add_argument("--n", type=int, default=12, help="number of subjects (default: 12)")
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--layout", choices=["r1.1", "r2.0"], default="r1.1", help="ATLAS release layout (default r1.1)")
    sa.add_argument("--quiet", action="store_true", help="no progress bar")
    sa.set_defaults(func=_cmd_synth)

    dl = sub.add_parser("datalist", help="build a MONAI datalist JSON from an ATLAS R1.1 or R2.0 folder")
    dl.add_argument("--root", required=True, help="data folder (searched recursively)")
    dl.add_argument("--out", required=True, help="datalist JSON to write")
    dl.add_argument("--version", choices=["auto", "r1.1", "r2.0"], default="auto")
    dl.add_argument("--val-fraction", type=float, default=0.2, help="held-out fraction of subjects (default 0.2)")
    dl.add_argument("--folds", type=int, default=0, help="k folds instead of one split (default: none)")
    dl.add_argument("--seed", type=int, default=0)
    dl.add_argument("--skip-incomplete", action="store_true", help="warn about and skip unpaired files")
    dl.set_defaults(func=_cmd_datalist)

    r = sub.add_parser("run", help="run a bundle: train, evaluate or infer (MONAI's bundle runner)")
    r.add_argument("mode", choices=["train", "evaluate", "infer"])
    r.add_argument("bundle", help="bundle folder or name of a project bundle")
    r.add_argument("--dataset-dir", help="data folder (with datalist.json for train/evaluate)")
    r.add_argument("--bundle-root", help="where models/ and eval/ go (default: the bundle folder)")
    r.add_argument("--set", action="append", metavar="ID=VALUE", help="override a config id, e.g. epochs=5")
    r.set_defaults(func=_cmd_run)

    x = sub.add_parser("experiments", help="re-run the rows of a paper's tables and write them with p-values and plots")
    xsub = x.add_subparsers(dest="paper", required=True)
    xs = xsub.add_parser("stroke", help="stroke thesis (seed 002): tables 3.1, 3.2, 4.1, 4.2, 4.4")
    xs.add_argument("--table", required=True, choices=["3.1", "3.2", "4.1", "4.2", "4.4"])
    xs.add_argument("--datalist", required=True, help="datalist JSON (training/validation) from `lesionlab datalist`")
    xs.add_argument("--epochs", type=int, default=150, help="training epochs per row (thesis: 150)")
    xs.add_argument("--workdir", default="experiments", help="output folder (default: experiments)")
    xs.add_argument("--quick", action="store_true", help="narrow networks for CPU smoke runs")
    xs.add_argument("--slices-per-volume", type=int, help="2.5D samples per volume and epoch")
    xs.set_defaults(func=_cmd_experiments)

    e = sub.add_parser("export-ts", help="export models/model.pt of a bundle to TorchScript models/model.ts")
    e.add_argument("bundle")
    e.set_defaults(func=_cmd_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LesionlabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
