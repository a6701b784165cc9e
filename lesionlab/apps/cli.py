"""The ``lesionlab`` command line: ``lesionlab <command> --help`` documents each command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from lesionlab import __version__
from lesionlab.errors import LesionlabError

__all__ = ["main", "build_parser"]


def _parse_overrides(items: Sequence[str] | None) -> dict:
    """``ID=VALUE`` strings -> dict; values are Python literals when they parse as such, else strings."""
    import ast

    overrides: dict = {}
    for item in items or []:
        if "=" not in item:
            raise LesionlabError(f"--set expects ID=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return overrides


def _cmd_demo(args: argparse.Namespace) -> int:
    from lesionlab.apps.demo import run_demo

    run_demo(args.workdir, n_subjects=args.n, epochs=args.epochs, slices_per_volume=args.slices_per_volume,
             batch_volumes=args.batch_volumes, full_width=args.full_width, seed=args.seed)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from lesionlab.data.synthetic import synth_atlas

    subjects = synth_atlas(args.out, n=args.n, seed=args.seed, layout=args.layout, progress=not args.quiet)
    vols = [s["lesion_ml"] for s in subjects]
    print(f"wrote {len(subjects)} synthetic {args.layout} subjects to {args.out} "
          f"(lesion volumes {min(vols):.1f}-{max(vols):.1f} mL); see NOTICE_MNI152.txt there")
    return 0


def _cmd_synth_isles(args: argparse.Namespace) -> int:
    from lesionlab.data.synthetic import synth_isles2015

    cases = synth_isles2015(args.out, n=args.n, seed=args.seed, shape=tuple(args.shape), progress=not args.quiet)
    print(f"wrote {len(cases)} synthetic ISLES 2015 SISS cases (.mha, {'x'.join(map(str, args.shape))}) to {args.out}; "
          "see NOTICE_MNI152.txt there")
    return 0


def _cmd_datalist(args: argparse.Namespace) -> int:
    from lesionlab.data.datalist import build_datalist, build_isles_datalist

    if args.dataset == "isles2015":
        folds = args.folds or 5
        d = build_isles_datalist(args.root, args.out, folds=folds, seed=args.seed)
        print(f"{args.out}: {len(d['training'])} ISLES 2015 cases in {folds} cross-validation folds")
        return 0
    d = build_datalist(args.root, args.out, version=args.version, val_fraction=args.val_fraction, folds=args.folds,
                       seed=args.seed, strict=not args.skip_incomplete)
    n_val = len(d.get("validation", []))
    print(f"{args.out}: {len(d['training']) + n_val} subjects, {len(d['training'])} training, {n_val} validation"
          + (f", {args.folds} folds" if args.folds else ""))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from lesionlab.apps.bundle import run_bundle

    overrides = _parse_overrides(args.set)
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

    extra = _parse_overrides(args.set)
    if args.slices_per_volume:
        extra["slices_per_volume"] = args.slices_per_volume
    paths = run_table(args.table, args.datalist, args.workdir, epochs=args.epochs, quick=args.quick, extra=extra)
    print(open(paths["table"]).read())
    for k, v in paths.items():
        print(f"{k:8s} {v}")
    return 0


def _cmd_synth_dicom(args: argparse.Namespace) -> int:
    from lesionlab.data.dicom import synth_dicom_series, synth_head_dicom_series

    if args.toy:
        s = synth_dicom_series(args.out, n_slices=args.n_slices or 24, modality=args.modality, size=args.size or 64,
                               seed=args.seed)
    else:
        if args.modality != "MR":
            raise LesionlabError("--modality CT is only available with --toy (the head series is a T1 MR)")
        s = synth_head_dicom_series(args.out, seed=args.seed, size=args.size or 224, n_slices=args.n_slices or 52)
    rows, cols = s.image.shape[1:]
    print(f"wrote {len(s.files)} {args.modality} DICOM files ({rows}x{cols}) to {s.folder}; "
          f"SeriesInstanceUID {s.series_instance_uid}")
    return 0


def _cmd_export_archive(args: argparse.Namespace) -> int:
    from lesionlab.apps.deploy import export_bundle, parse_overrides

    m = export_bundle(args.bundle, args.out, ckpt=args.ckpt, random_weights=args.random_weights,
                      overrides=parse_overrides(args.set), evaluation=args.evaluation, dataset=args.dataset)
    metrics = m.get("eval_metrics")
    print(f"{args.out}: {m['bundle_name']} {m['bundle_version']}, {len(m['files'])} files + manifest.json; "
          f"TorchScript by {m['torchscript']['method']}, ONNX by the {m['onnx']['exporter']} exporter; "
          + (f"eval_metrics: mean Dice {metrics['mean_dice']} on {metrics['n_cases']} cases ({metrics['date']})"
             if metrics else "no eval_metrics (no evaluation of these weights)")
          + (" -- RANDOM WEIGHTS, for testing only" if m["random_weights"] else ""))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    import json

    from lesionlab.apps.deploy import verify_bundle
    from lesionlab.utils import atomic_write_text

    report = verify_bundle(args.bundle, strict_code=args.strict, trust=args.trust, expected_sha256=args.sha256)
    print(report.format())
    if args.report:
        atomic_write_text(args.report, json.dumps(report.as_dict(), indent=2))
    return 0 if report.ok else 1


def _cmd_infer(args: argparse.Namespace) -> int:
    from lesionlab.apps.deploy import infer_bundle, parse_overrides
    from lesionlab.apps.glomerulus_cli import infer_classification

    code = infer_classification(args, parse_overrides(args.set))  # classification bundles: crops -> CSV
    if code is not None:
        return code
    run = infer_bundle
    if args.distributed:
        from lesionlab.apps.deploy.shard import infer_sharded as run
    s = run(args.bundle, args.input, args.output, fmt=args.format, device=args.device,
            overrides=parse_overrides(args.set), series_uid=args.series_uid, trust=args.trust,
            overwrite=args.overwrite, space=args.space, spacing=args.spacing)
    for c in s["cases"]:
        if c["status"] in ("ok", "skipped"):
            done = "ok     " if c["status"] == "ok" else "skipped"
            print(f"{done} {c['case']}: {c['output']} (lesion {c['lesion_volume_ml']:.2f} mL)"
                  + (" -- complete from a previous run (--overwrite to redo)" if c["status"] == "skipped" else ""))
        else:
            print(f"FAILED  {c['case']}: {c['error']} (traceback in {s['log']})", file=sys.stderr)
    print(f"{s['n_ok']}/{s['n_cases']} cases segmented; summary: {args.output}/summary.json")
    if args.distributed and int(os.environ.get("RANK", 0)) != 0:
        return 0  # rank 0 reports the merged outcome; a non-zero exit here would make torchrun stop rank 0
    return int(s["exit_code"])


def build_parser() -> argparse.ArgumentParser:
    from lesionlab.apps import glomerulus_cli
    from lesionlab.apps.experiments import TABLES

    p = argparse.ArgumentParser(prog="lesionlab", description="lesionlab: MONAI bundles for lesion segmentation.")
    p.add_argument("--version", action="version", version=f"lesionlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="synthesise data, train, evaluate, infer and export the D-UNet bundle on a CPU")
    d.add_argument("--workdir", default="demo_output", help="output folder (default: demo_output)")
    d.add_argument("--n", type=int, default=12, help="synthetic subjects (default: 12)")
    d.add_argument("--epochs", type=int, default=20, help="training epochs (default: 20)")
    d.add_argument("--slices-per-volume", type=int, default=8, help="2.5D samples per volume and epoch (default: 8)")
    d.add_argument("--batch-volumes", type=int, default=1, help="volumes per optimiser step (default: 1)")
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
    si = ssub.add_parser("isles", help="ISLES 2015 SISS-layout T1 + lesion .mha files, skull-stripped, from MNI152")
    si.add_argument("--out", required=True, help="output folder")
    si.add_argument("--n", type=int, default=10, help="number of cases (default: 10)")
    si.add_argument("--seed", type=int, default=0)
    si.add_argument("--shape", type=int, nargs=3, default=[230, 230, 154], help="volume size (default 230 230 154)")
    si.add_argument("--quiet", action="store_true", help="no progress bar")
    si.set_defaults(func=_cmd_synth_isles)
    sd = ssub.add_parser("dicom", help="a synthetic T1 head series in scanner space (oblique, 0.94x0.94x3 mm) written "
                                       "as real DICOM files, one per slice; --toy: a small toy brain (MR or CT)")
    sd.add_argument("--out", required=True, help="output folder")
    sd.add_argument("--toy", action="store_true", help="the small toy brain instead of the head (tests, no nilearn)")
    sd.add_argument("--n-slices", type=int, help="slices (head: 52; toy: 24, at least 16)")
    sd.add_argument("--modality", choices=["MR", "CT"], default="MR", help="CT only with --toy")
    sd.add_argument("--size", type=int, help="rows and columns (head: 224; toy: 64)")
    sd.add_argument("--seed", type=int, default=0)
    sd.set_defaults(func=_cmd_synth_dicom)
    glomerulus_cli.add_synth_parser(ssub)

    dl = sub.add_parser("datalist", help="build a MONAI datalist JSON from an ATLAS R1.1 or R2.0 folder")
    dl.add_argument("--root", required=True, help="data folder (searched recursively)")
    dl.add_argument("--out", required=True, help="datalist JSON to write")
    dl.add_argument("--dataset", choices=["atlas", "isles2015"], default="atlas",
                    help="atlas (R1.1/R2.0, 80/20 split or --folds) or isles2015 (5-fold CV, the thesis's protocol)")
    dl.add_argument("--version", choices=["auto", "r1.1", "r2.0"], default="auto")
    dl.add_argument("--val-fraction", type=float, default=0.2, help="held-out fraction of subjects (default 0.2)")
    dl.add_argument("--folds", type=int, default=0, help="k folds instead of one split (default: none)")
    dl.add_argument("--seed", type=int, default=0)
    dl.add_argument("--skip-incomplete", action="store_true", help="warn about and skip unpaired files")
    dl.set_defaults(func=_cmd_datalist)
    glomerulus_cli.add_datalist_parser(sub)

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
    xs.add_argument("--workdir", default="experiments", help="output folder (default: experiments)")
    xs.add_argument("--quick", action="store_true", help="narrow networks for CPU smoke runs")
    xs.add_argument("--slices-per-volume", type=int, help="2.5D samples per volume and epoch")
    xs.add_argument("--set", action="append", metavar="ID=VALUE",
                    help="override a config id in every row, e.g. roi_end=[48,48] (repeatable)")
    xs.set_defaults(func=_cmd_experiments)
    glomerulus_cli.add_experiments_parser(xsub)

    e = sub.add_parser("export-ts", help="export models/model.pt of a bundle to TorchScript models/model.ts")
    e.add_argument("bundle")
    e.set_defaults(func=_cmd_export)

    ex = sub.add_parser("export",
                        help="write a self-contained deployment archive (weights, TorchScript, ONNX, manifest)")
    ex.add_argument("bundle", help="bundle folder or name of a project bundle")
    ex.add_argument("--out", required=True, help="archive to write (.zip)")
    ex.add_argument("--ckpt", help="trained weights (default: the bundle's models/model.pt)")
    ex.add_argument("--evaluation", help="metrics_summary.json of the evaluation of these weights (default: the "
                                         "bundle's eval/metrics_summary.json when newer than the weights)")
    ex.add_argument("--dataset", help="name of the evaluation data set, recorded in eval_metrics")
    ex.add_argument("--random-weights", action="store_true",
                    help="export an untrained network when there are no weights (testing only; in the manifest)")
    ex.add_argument("--set", action="append", metavar="ID=VALUE",
                    help="write a config id into the archived configs, e.g. network_def#features=[8,16,16,32,32]")
    ex.set_defaults(func=_cmd_export_archive)

    v = sub.add_parser("verify", help="check an archive or bundle folder before deployment (exit 0 only if all pass)")
    v.add_argument("bundle", help="archive (.zip) or bundle folder")
    v.add_argument("--strict", action="store_true",
                   help="never run a bundle whose configs hold items outside the allow-list, even with --trust")
    v.add_argument("--trust", action="store_true",
                   help="run the bundle although its configs hold expressions outside the allow-list (listed as WARN)")
    v.add_argument("--sha256", metavar="HASH", help="the archive's published sha256: the file must match it")
    v.add_argument("--report", help="also write the checks as JSON to this file")
    v.set_defaults(func=_cmd_verify)

    inf = sub.add_parser("infer", help="segment images or DICOM series with an archive or bundle folder")
    inf.add_argument("bundle", help="archive (.zip) or bundle folder")
    inf.add_argument("--input", required=True,
                     help="NIfTI/NRRD/MHA file, DICOM series folder, folder of inputs or datalist JSON")
    inf.add_argument("--output", required=True, help="output folder (one file per case + summary.json)")
    inf.add_argument("--format", choices=["nifti", "nrrd", "dicom-seg"], default="nifti",
                     help="nifti (default), nrrd (3D Slicer .seg.nrrd) or dicom-seg (DICOM inputs only)")
    inf.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    inf.add_argument("--series-uid", help="SeriesInstanceUID to read when a DICOM folder holds several series")
    inf.add_argument("--set", action="append", metavar="ID=VALUE", help="override an inference config id")
    inf.add_argument("--distributed", action="store_true",
                     help="under torchrun: each process segments its share of the cases; reruns skip finished cases "
                          "(OUT/manifest.jsonl)")
    inf.add_argument("--space", choices=["auto", "native", "mni"],
                     help="native: register every input to MNI152; mni: inputs are already registered; auto (the "
                          "bundle's default): register unless the input is on the model grid")
    inf.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                     help="voxel spacing (mm) for inputs whose headers have none (refused otherwise)")
    inf.add_argument("--trust", action="store_true",
                     help="run a bundle whose configs hold expressions outside the allow-list (refused otherwise)")
    inf.add_argument("--overwrite", action="store_true", help="redo cases whose output and report already exist")
    inf.set_defaults(func=_cmd_infer)
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
