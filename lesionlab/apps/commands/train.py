"""``lesionlab demo``, ``run`` and ``experiments <paper>``: the CPU demo, MONAI's bundle runner, and the re-runs
of the papers' tables."""

from __future__ import annotations

import argparse

from lesionlab.apps.deploy.config import parse_overrides

__all__ = ["add_demo_parser", "add_parsers"]


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.task == "glomeruli":
        from lesionlab.apps.glomeruli import run_glomeruli_demo

        run_glomeruli_demo(args.workdir, iterations=args.iterations, full_size=args.full_width, seed=args.seed)
        return 0
    from lesionlab.apps.demo import run_demo

    run_demo(args.workdir, n_subjects=args.n, epochs=args.epochs, slices_per_volume=args.slices_per_volume,
             width="full" if args.full_width else args.width, spatial_size=args.spatial_size,
             val_interval=args.val_interval, sampling=args.sampling, seed=args.seed, learning_rate=args.lr,
             lr_decay=args.lr_decay)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from lesionlab.apps.bundle import run_bundle

    overrides = parse_overrides(args.set)
    if args.dataset_dir:
        overrides["dataset_dir"] = args.dataset_dir
    run_bundle(args.bundle, args.mode, bundle_root=args.bundle_root, **overrides)
    return 0


def _cmd_experiments(args: argparse.Namespace) -> int:
    from lesionlab.apps.experiments import run_table

    extra = parse_overrides(args.set)
    if args.slices_per_volume:
        extra["slices_per_volume"] = args.slices_per_volume
    if args.sampling:
        extra["sampling"] = args.sampling
    paths = run_table(args.table, args.datalist, args.workdir, epochs=args.epochs, quick=args.quick, extra=extra)
    print(open(paths["table"]).read())
    for k, v in paths.items():
        print(f"{k:8s} {v}")
    return 0


def _cmd_experiments_imbalance(args: argparse.Namespace) -> int:
    from lesionlab.apps.imbalance_experiments import run_imbalance_table

    extra = parse_overrides(args.set)
    for table in args.table:
        paths = run_imbalance_table(table, args.dataset_dir, args.workdir, epochs=args.epochs, quick=args.quick,
                                    rows=args.row, extra=extra)
        print(f"wrote {paths['table']}")
    return 0


def _cmd_experiments_renogram(args: argparse.Namespace) -> int:
    from lesionlab.apps.renogram import run_renogram_table

    paths = run_renogram_table(args.datalist, args.workdir, epochs=args.epochs, quick=args.quick,
                               extra=parse_overrides(args.set), size=args.size, rows=args.rows)
    print(open(paths["table"]).read())
    for k, v in paths.items():
        print(f"{k:8s} {v}")
    return 0


def _cmd_experiments_glomeruli(args: argparse.Namespace) -> int:
    from lesionlab.apps.experiments_glomeruli import run_glomeruli_ablation

    paths = run_glomeruli_ablation(args.datalist, args.workdir, iterations=args.iterations, batch_size=args.batch_size,
                                   quick=args.quick, extra=parse_overrides(args.set))
    print(open(paths["table"]).read())
    for k, v in paths.items():
        print(f"{k:8s} {v}")
    return 0


def _experiment_outputs(parser: argparse.ArgumentParser, quick_help: str, set_example: str = "") -> None:
    """The options every ``lesionlab experiments <paper>`` command shares: output folder, CPU mode, overrides."""
    parser.add_argument("--workdir", default="experiments", help="output folder (default: experiments)")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--set", action="append", metavar="ID=VALUE",
                        help="override a config id in every row" + (f", e.g. {set_example}" if set_example else "")
                        + " (repeatable)")


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    """``demo``: the first command of ``lesionlab --help``."""
    d = sub.add_parser("demo", help="synthesise data, train, evaluate, infer and export the D-UNet bundle on a CPU")
    d.add_argument("--workdir", default="demo_output", help="output folder (default: demo_output)")
    d.add_argument("--n", type=int, default=12, help="synthetic subjects (default: 12)")
    d.add_argument("--epochs", type=int, default=20, help="training epochs (default: 20)")
    d.add_argument("--slices-per-volume", type=int, default=24, help="2.5D samples per volume and epoch (default: 24)")
    d.add_argument("--sampling", choices=["sampled", "all"], default="sampled",
                   help="'sampled' (default) or 'all' (the thesis's protocol: every slice once per epoch; slow)")
    d.add_argument("--width", choices=["quarter", "half", "full"], default="quarter",
                   help="D-UNet width (default: quarter; full = the paper's network)")
    d.add_argument("--full-width", action="store_true", help="same as --width full")
    d.add_argument("--spatial-size", type=int, default=96, help="in-plane input size (default 96; thesis 192)")
    d.add_argument("--val-interval", type=int, default=2, help="epochs between model-selection checks (default 2)")
    d.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3; the thesis: 1e-3)")
    d.add_argument("--lr-decay", type=float, default=0.97,
                   help="learning-rate factor per epoch (default 0.97)")
    d.add_argument("--seed", type=int, default=0, help="seed of the data, the split and the training (default 0)")
    d.add_argument("--task", choices=["stroke", "glomeruli"], default="stroke",
                   help="stroke (D-UNet, default) or glomeruli (CBAM-PSPNet on synthetic PAS slides, whole slides)")
    d.add_argument("--iterations", type=int, default=300, help="glomeruli: training iterations (default: 300)")
    d.set_defaults(func=_cmd_demo)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``run`` and ``experiments`` (stroke, glomerulus-cls, imbalance, renogram, glomeruli)."""
    from lesionlab.apps import glomerulus_cli
    from lesionlab.apps.experiments import TABLES

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
    xs.add_argument("--table", required=True, choices=sorted(TABLES))
    xs.add_argument("--datalist", required=True, help="datalist JSON (training/validation) from `lesionlab datalist`")
    xs.add_argument("--epochs", type=int, default=150, help="training epochs per row (thesis: 150)")
    _experiment_outputs(xs, "narrow networks for CPU smoke runs", "roi_end=[48,48]")
    xs.add_argument("--slices-per-volume", type=int, help="2.5D samples per volume and epoch (sampled mode)")
    xs.add_argument("--sampling", choices=["all", "sampled"],
                    help="2.5D training protocol: 'all' = the thesis's (every slice once per epoch, batch 16), "
                         "'sampled' = the bundles' fast default (slices_per_volume per volume and epoch)")
    xs.set_defaults(func=_cmd_experiments)
    glomerulus_cli.add_experiments_parser(xsub)
    xi = xsub.add_parser("imbalance", help="nuclei imbalance thesis (seed 001): tables 4.3, 4.4, 4.8, 4.12, "
                                                    "4.13, 4.20")
    xi.add_argument("--table", required=True, action="append", choices=["4.3", "4.4", "4.8", "4.12", "4.13", "4.20"],
                    help="sub-study (repeatable): screening 4.3 / 4.4 / 4.8, weight functions 4.12, top-k 4.13, "
                         "two-stage 4.20")
    xi.add_argument("--dataset-dir", required=True, help="CoNIC-format folder (lesionlab synth nuclei writes one)")
    xi.add_argument("--epochs", type=int, default=10, help="training epochs per row (thesis demo: 10)")
    _experiment_outputs(xi, "narrow networks for CPU smoke runs", "roi_size=[64,64]")
    xi.add_argument("--row", action="append", help="run only this row (repeatable)")
    xi.set_defaults(func=_cmd_experiments_imbalance)
    xr = xsub.add_parser("renogram", help="renogram paper (seed 003): Table 2 columns and the flip-augmented Our*")
    xr.add_argument("--datalist", required=True, help="renogram datalist JSON (`lesionlab synth renogram` writes one)")
    xr.add_argument("--epochs", type=int, default=1000, help="maximum epochs per row (paper: 1000, early stopping)")
    xr.add_argument("--size", type=int, default=384, help="network input size (paper: 384; 96 for CPU runs)")
    _experiment_outputs(xr, "narrow networks for CPU runs")
    xr.add_argument("--rows", action="append", metavar="NAME", help="run only this row (repeatable); earlier rows kept")
    xr.set_defaults(func=_cmd_experiments_renogram)

    xg = xsub.add_parser("glomeruli", help="glomerulus thesis (seed 000): Table 4.5, CE vs CE+Dice x CBAM off/on")
    xg.add_argument("--datalist", required=True, help="tile datalist JSON from `lesionlab tile hubmap`")
    xg.add_argument("--iterations", type=int, default=24000, help="training iterations per row (thesis: 24000)")
    xg.add_argument("--batch-size", type=int, default=8, help="batch size (thesis: 8)")
    _experiment_outputs(xg, "reduced network at 512 -> 128 tiles for CPU smoke runs")
    xg.set_defaults(func=_cmd_experiments_glomeruli)
