"""``lesionlab wsi``, ``export-ts``, ``export``, ``verify`` and ``infer``: segment whole slides, export a bundle
to TorchScript or a deployment archive, check an archive, and segment images with one."""

from __future__ import annotations

import argparse
import os
import sys

from lesionlab.apps.deploy.config import parse_overrides
from lesionlab.errors import LesionlabError

__all__ = ["add_wsi_parser", "add_parsers"]


def _cmd_wsi(args: argparse.Namespace) -> int:
    from lesionlab.apps.glomeruli import segment_slides

    segment_slides(args.bundle, args.input, args.output, ckpt=args.ckpt, device=args.device,
                   overrides=parse_overrides(args.set), patch=args.patch, overlap=args.overlap,
                   min_tissue=args.min_tissue, batch_size=args.batch_size, outputs=args.outputs,
                   progress=not args.quiet)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from lesionlab.apps.bundle import bundle_path, export_torchscript

    print(export_torchscript(bundle_path(args.bundle)))
    return 0


def _cmd_export_archive(args: argparse.Namespace) -> int:
    from lesionlab.apps.deploy import export_bundle

    m = export_bundle(args.bundle, args.out, ckpt=args.ckpt, random_weights=args.random_weights,
                      overrides=parse_overrides(args.set), evaluation=args.evaluation, dataset=args.dataset)
    metrics = m.get("eval_metrics")
    print(f"{args.out}: {m['bundle_name']} {m['bundle_version']}, {len(m['files'])} files + manifest.json; "
          f"TorchScript by {m['torchscript']['method']}, ONNX by the {m['onnx']['exporter']} exporter; "
          + (f"eval_metrics: mean Dice {metrics['mean_dice']} on {metrics['n_cases']} cases ({metrics['date']})"
             if metrics and "mean_dice" in metrics else
             f"eval_metrics: mIoU {metrics['mIoU']}, mDice {metrics['mDice']} over {metrics['n_pixels']} pixels "
             f"({metrics['date']})" if metrics else "no eval_metrics (no evaluation of these weights)")
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
    from lesionlab.apps.deploy import infer_bundle
    from lesionlab.apps.glomerulus_cli import infer_classification
    from lesionlab.apps.renogram import infer_renogram, is_renogram_bundle

    if is_renogram_bundle(args.bundle):  # NM renograms: label images + split function per study
        if args.distributed:
            raise LesionlabError(f"{args.bundle}: --distributed shards volume archives (NIfTI/NRRD/MHA/DICOM); "
                                 "segment renogram studies without it")
        s = infer_renogram(args.bundle, args.input, args.output, fmt=args.format, device=args.device,
                           overrides=parse_overrides(args.set))
        for c in s["cases"]:
            print(f"{'ok     ' if c['status'] == 'ok' else 'FAILED '} {c['study']}" + (f": {c['error']}" if
                  c["status"] != "ok" else ""), file=sys.stdout if c["status"] == "ok" else sys.stderr)
        print(f"{s['n_ok']}/{s['n_studies']} studies segmented; summary: {args.output}/summary.json")
        return int(s["exit_code"])

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
            what = (f"lesion {c['lesion_volume_ml']:.2f} mL" if "lesion_volume_ml" in c
                    else f"{c['objects']} objects, {c['total_area_px']:.0f} px^2" if c.get("objects") is not None
                    else f"foreground {c['foreground_fraction']:.1%}" if "foreground_fraction" in c else "")
            print(f"{done} {c['case']}: {c['output']}" + (f" ({what})" if what else "")
                  + (" -- complete from a previous run (--overwrite to redo)" if c["status"] == "skipped" else ""))
        else:
            where = f" (traceback in {s['log']})" if s.get("log") else ""
            print(f"FAILED  {c['case']}: {c['error']}{where}", file=sys.stderr)
    print(f"{s['n_ok']}/{s['n_cases']} cases segmented; summary: {args.output}/summary.json")
    if args.distributed and int(os.environ.get("RANK", 0)) != 0:
        return 0  # rank 0 reports the merged outcome; a non-zero exit here would make torchrun stop rank 0
    return int(s["exit_code"])


def add_wsi_parser(sub: argparse._SubParsersAction) -> None:
    """``wsi``: glomeruli on whole-slide images (listed after ``tile`` in ``lesionlab --help``)."""
    w = sub.add_parser("wsi", help="segment glomeruli on whole-slide images (OME-TIFF mask, HuBMAP RLE, GeoJSON)")
    w.add_argument("bundle", help="glomerulus bundle folder (with models/model.pt) or project bundle name")
    w.add_argument("--input", required=True, nargs="+", help="slide files (.tiff, .ome.tif, .svs, ...)")
    w.add_argument("--output", required=True, help="output folder")
    w.add_argument("--ckpt", help="weights (default: the bundle's models/model.pt)")
    w.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    w.add_argument("--patch", type=int, default=1024, help="patch side in level-0 pixels (default 1024)")
    w.add_argument("--overlap", type=float, default=0.25, help="patch overlap fraction (default 0.25)")
    w.add_argument("--min-tissue", type=float, default=0.02, help="patches with less tissue skip the network")
    w.add_argument("--batch-size", type=int, default=4)
    w.add_argument("--outputs", nargs="+", choices=["ome_tiff", "rle", "geojson"],
                   default=["ome_tiff", "rle", "geojson"])
    w.add_argument("--set", action="append", metavar="ID=VALUE", help="override an inference config id")
    w.add_argument("--quiet", action="store_true", help="no progress bar")
    w.set_defaults(func=_cmd_wsi)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``export-ts``, ``export``, ``verify``, ``infer``."""
    e = sub.add_parser("export-ts", help="export models/model.pt of a bundle to TorchScript models/model.ts")
    e.add_argument("bundle")
    e.set_defaults(func=_cmd_export)

    ex = sub.add_parser("export",
                        help="write a self-contained deployment archive (weights, TorchScript, ONNX, manifest)")
    ex.add_argument("bundle", help="bundle folder or name of a project bundle")
    ex.add_argument("--out", required=True, help="archive to write (.zip)")
    ex.add_argument("--ckpt", help="trained weights (default: the bundle's models/model.pt)")
    ex.add_argument("--evaluation", help="metrics_summary.json or scores.json of the evaluation of these weights "
                                         "(default: the bundle's eval/metrics_summary.json, else eval/scores.json, "
                                         "when newer than the weights)")
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
                     help="NIfTI/NRRD/MHA file, DICOM series folder, folder of inputs or datalist JSON; PNG/TIFF "
                     "tiles; whole slides (.svs, .ome.tif, pyramidal or large .tiff) with a whole-slide bundle")
    inf.add_argument("--output", required=True, help="output folder (one file per case + summary.json)")
    inf.add_argument("--format", choices=["nifti", "nrrd", "dicom-seg", "png"], default="nifti",
                     help="nifti (default), nrrd (3D Slicer .seg.nrrd) or dicom-seg (DICOM inputs only); NM renogram "
                     "bundles write PNG + NIfTI label images (nifti), PNG only (png) or PNG + NIfTI + a DICOM SEG per "
                     "fused frame (dicom-seg, DICOM NM multi-frame studies)")
    inf.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    inf.add_argument("--series-uid", help="SeriesInstanceUID to read when a DICOM folder holds several series")
    inf.add_argument("--set", action="append", metavar="ID=VALUE", help="override an inference config id")
    inf.add_argument("--distributed", action="store_true",
                     help="under torchrun: each process segments its share of the volumes; a rerun skips the cases "
                          "whose output and report exist; per-case status in OUT/manifest.jsonl")
    inf.add_argument("--space", choices=["auto", "native", "mni"],
                     help="native: register every input to MNI152; mni: inputs are already registered; auto (the "
                          "bundle's default): register unless the input is on the model grid")
    inf.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                     help="voxel spacing (mm) for inputs whose headers have none (refused otherwise)")
    inf.add_argument("--trust", action="store_true",
                     help="run a bundle whose configs hold expressions outside the allow-list (refused otherwise)")
    inf.add_argument("--overwrite", action="store_true", help="redo cases whose output and report already exist")
    inf.set_defaults(func=_cmd_infer)
