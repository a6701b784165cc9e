"""Command-line pieces of the glomerulus classification work (seed 004), plugged into ``lesionlab.apps.commands``:
``lesionlab synth glomeruli-cls``, ``lesionlab datalist-glomeruli``, and ``lesionlab infer`` on a classification
bundle (a folder of crops to a CSV of class probabilities).
"""

from __future__ import annotations

import argparse
import os

from lesionlab.errors import LesionlabError

__all__ = ["add_synth_parser", "add_datalist_parser", "add_experiments_parser", "infer_classification"]


def _cmd_synth(args: argparse.Namespace) -> int:
    from lesionlab.data.glomeruli import make_glomeruli_datalist
    from lesionlab.data.synthetic.glomeruli_cls import synth_glomeruli_cls

    r = synth_glomeruli_cls(args.out, n_slides=args.n_slides, crops_per_slide=args.crops_per_slide, size=args.size,
                            seed=args.seed)
    datalist = os.path.join(r["out_dir"], "datalist.json")
    d = make_glomeruli_datalist(r["out_dir"], r["labels"], datalist, seed=args.seed)
    print(f"wrote {r['n_images']} synthetic glomerulus crops ({args.n_slides} slides) to {r['out_dir']}; labels "
          f"{r['labels']}; slide-grouped datalist {datalist} ({len(d['training'])}/{len(d['validation'])}/"
          f"{len(d['test'])} train/validation/test)")
    return 0


def add_synth_parser(ssub: argparse._SubParsersAction) -> None:
    """``lesionlab synth glomeruli-cls``."""
    g = ssub.add_parser("glomeruli-cls", help="four-class synthetic glomerulus crops (HE/PAS) with JSON-lines labels")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--n-slides", type=int, default=20, help="slides (default 20)")
    g.add_argument("--crops-per-slide", type=int, default=12, help="crops per slide (default 12)")
    g.add_argument("--size", type=int, default=96, help="typical crop side in pixels (default 96)")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=_cmd_synth)


def _cmd_datalist(args: argparse.Namespace) -> int:
    from lesionlab.data.glomeruli import make_glomeruli_datalist

    d = make_glomeruli_datalist(args.images, args.labels, args.out, ratios=args.ratios, seed=args.seed,
                                default_stain=args.stain)
    print(f"{args.out}: {len(d['training'])}/{len(d['validation'])}/{len(d['test'])} crops in "
          "training/validation/test, grouped by slide")
    return 0


def add_datalist_parser(sub: argparse._SubParsersAction) -> None:
    """``lesionlab datalist-glomeruli``: JSON-lines labels + crop folder -> slide-grouped datalist."""
    g = sub.add_parser("datalist-glomeruli", help="slide-grouped 6:2:2 datalist from glomerulus crops and labels")
    g.add_argument("--images", required=True, help="folder of <slide>_<n>.png crops")
    g.add_argument("--labels", required=True, help="JSON-lines label file (Chinese one-hot keys)")
    g.add_argument("--out", required=True, help="datalist JSON to write")
    g.add_argument("--ratios", type=float, nargs=3, default=[0.6, 0.2, 0.2], help="train/val/test (default .6 .2 .2)")
    g.add_argument("--stain", default="HE", help="stain of rows without a 'stain' field (default HE)")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=_cmd_datalist)


def infer_classification(args: argparse.Namespace, overrides: dict) -> int | None:
    """``lesionlab infer`` for a classification bundle folder (None when the bundle is not one)."""
    from lesionlab.apps.classification import classify_folder, is_classification_bundle
    from lesionlab.apps.deploy.archive import open_bundle

    with open_bundle(args.bundle) as src:
        if not is_classification_bundle(src.root):
            return None
    if getattr(args, "distributed", False):
        raise LesionlabError(f"{args.bundle}: --distributed shards volume archives of segmentation bundles; classify "
                             "crops without it")
    out = args.output if args.output.lower().endswith(".csv") else os.path.join(args.output, "predictions.csv")
    s = classify_folder(args.bundle, args.input, out, device=args.device, overrides=overrides)
    for r in s["rows"]:
        if r["error"]:
            print(f"FAILED  {r['file']}: {r['error']}")
    print(f"{s['n_ok']}/{s['n_files']} crops classified; probabilities: {out}")
    return 0 if s["n_failed"] == 0 else 1


def _cmd_experiments(args: argparse.Namespace) -> int:
    from lesionlab.apps.deploy import parse_overrides
    from lesionlab.apps.glomerulus_experiments import run_glomerulus_table

    paths = run_glomerulus_table(args.table, args.datalist, args.workdir, epochs=args.epochs, quick=args.quick,
                                 extra=parse_overrides(args.set))
    with open(paths["table"], encoding="utf-8") as f:
        print(f.read())
    for k, v in paths.items():
        print(f"{k:8s} {v}")
    return 0


def add_experiments_parser(xsub: argparse._SubParsersAction) -> None:
    """``lesionlab experiments glomerulus-cls``: Table 1 and the freezing study of seed 004."""
    g = xsub.add_parser("glomerulus-cls", help="glomerulus classification (seed 004): Table 1, freezing study")
    g.add_argument("--table", required=True, choices=["1", "freeze"])
    g.add_argument("--datalist", required=True, help="slide-grouped datalist JSON (training/validation/test)")
    g.add_argument("--epochs", type=int, default=200, help="training epochs per row (paper: 200)")
    g.add_argument("--workdir", default="experiments", help="output folder (default: experiments)")
    g.add_argument("--quick", action="store_true", help="one block per stage at 64 x 64 for CPU smoke runs")
    g.add_argument("--set", action="append", metavar="ID=VALUE", help="override a config id in every row")
    g.set_defaults(func=_cmd_experiments)
