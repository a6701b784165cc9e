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


def _cmd_synth_nuclei(args: argparse.Namespace) -> int:
    from lesionlab.data.synthetic import synth_conic, synth_monusac

    if args.format in ("conic", "both"):
        out = os.path.join(args.out, "conic") if args.format == "both" else args.out
        synth_conic(out, n=args.n, size=args.size, seed=args.seed, progress=not args.quiet)
        print(f"wrote {args.n} synthetic CoNIC tiles ({args.size}x{args.size}, images.npy + labels.npy) to {out}")
    if args.format in ("monusac", "both"):
        out = os.path.join(args.out, "monusac") if args.format == "both" else args.out
        synth_monusac(out, patients=args.patients, images_per_patient=args.images_per_patient, seed=args.seed,
                      progress=not args.quiet)
        print(f"wrote {args.patients * args.images_per_patient} synthetic MoNuSAC images (.tif + .xml) to {out}")
    return 0


def _cmd_synth_hubmap(args: argparse.Namespace) -> int:
    from lesionlab.data.synthetic import synth_hubmap

    paths = synth_hubmap(args.out, n_slides=args.n, shape=tuple(args.shape), seed=args.seed, mpp=args.mpp,
                         channel_first=args.channel_first, progress=not args.quiet,
                         compression=args.compression if args.compression != "none" else None)
    print(f"wrote {len(paths)} synthetic PAS-like slides ({args.shape[0]} x {args.shape[1]}) and train.csv "
          f"to {args.out}")
    return 0


def _cmd_tile(args: argparse.Namespace) -> int:
    from lesionlab.data.tiles import tile_hubmap

    path = tile_hubmap(args.root, args.out, tile=args.tile, min_tissue=args.min_tissue, split=args.split,
                       val_fraction=args.val_fraction, seed=args.seed, progress=not args.quiet)
    print(f"wrote tiles and {path}")
    return 0


def _cmd_wsi(args: argparse.Namespace) -> int:
    from lesionlab.apps.glomeruli import segment_slides

    segment_slides(args.bundle, args.input, args.output, ckpt=args.ckpt, device=args.device,
                   overrides=_parse_overrides(args.set), patch=args.patch, overlap=args.overlap,
                   min_tissue=args.min_tissue, batch_size=args.batch_size, outputs=args.outputs,
                   progress=not args.quiet)
    return 0


def _cmd_experiments_glomeruli(args: argparse.Namespace) -> int:
    from lesionlab.apps.experiments_glomeruli import run_glomeruli_ablation

    paths = run_glomeruli_ablation(args.datalist, args.workdir, iterations=args.iterations, batch_size=args.batch_size,
                                   quick=args.quick, extra=_parse_overrides(args.set))
    print(open(paths["table"]).read())
    for k, v in paths.items():
        print(f"{k:8s} {v}")
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
    if args.sampling:
        extra["sampling"] = args.sampling
    paths = run_table(args.table, args.datalist, args.workdir, epochs=args.epochs, quick=args.quick, extra=extra)
    print(open(paths["table"]).read())
    for k, v in paths.items():
        print(f"{k:8s} {v}")
    return 0


def _cmd_experiments_imbalance(args: argparse.Namespace) -> int:
    from lesionlab.apps.imbalance_experiments import run_imbalance_table

    extra = _parse_overrides(args.set)
    for table in args.table:
        paths = run_imbalance_table(table, args.dataset_dir, args.workdir, epochs=args.epochs, quick=args.quick,
                                    rows=args.row, extra=extra)
        print(f"wrote {paths['table']}")
    return 0


def _cmd_synth_dicom(args: argparse.Namespace) -> int:
    from lesionlab.data.synthetic.dicom_series import synth_dicom_series, synth_head_dicom_series

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


def _cmd_synth_renogram(args: argparse.Namespace) -> int:
    from lesionlab.data.synthetic.renogram import synth_renograms
    from lesionlab.pipelines.renogram import build_renogram_datalist

    synth_renograms(args.out, n=args.n, size=args.size, seed=args.seed, progress=not args.quiet)
    data = build_renogram_datalist(args.out, os.path.join(args.out, "datalist.json"), seed=args.seed)
    print(f"wrote {args.n} synthetic renograms (DICOM NM, {args.size}x{args.size}) to {args.out}; datalist.json: "
          + ", ".join(f"{len(v)} {k}" for k, v in data.items()) + " images (split by patient)")
    return 0


def _cmd_experiments_renogram(args: argparse.Namespace) -> int:
    from lesionlab.apps.renogram import run_renogram_table

    paths = run_renogram_table(args.datalist, args.workdir, epochs=args.epochs, quick=args.quick,
                               extra=_parse_overrides(args.set), size=args.size, rows=args.rows)
    print(open(paths["table"]).read())
    for k, v in paths.items():
        print(f"{k:8s} {v}")
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    from lesionlab.apps.deploy import infer_bundle, parse_overrides
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


def _cmd_app(args: argparse.Namespace) -> int:
    from lesionlab.apps.webapp.launch import run_app

    return run_app(args.host, args.port, models=args.models or [], max_upload_mb=args.max_upload_mb,
                   device=args.device, project_bundles=not args.no_project_bundles)



def _cmd_bench(args: argparse.Namespace) -> int:
    from lesionlab.apps.benchmark import main_from_args

    return main_from_args(args)


def _experiment_outputs(parser: argparse.ArgumentParser, quick_help: str, set_example: str = "") -> None:
    """The options every ``lesionlab experiments <paper>`` command shares: output folder, CPU mode, overrides."""
    parser.add_argument("--workdir", default="experiments", help="output folder (default: experiments)")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--set", action="append", metavar="ID=VALUE",
                        help="override a config id in every row" + (f", e.g. {set_example}" if set_example else "")
                        + " (repeatable)")

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
    sh = ssub.add_parser("hubmap", help="PAS-like kidney slides in the HuBMAP layout (pyramidal TIFF, train.csv RLE)")
    sh.add_argument("--out", required=True, help="output folder")
    sh.add_argument("--n", type=int, default=3, help="number of slides (default: 3)")
    sh.add_argument("--shape", type=int, nargs=2, default=[3072, 4096], help="height width (default 3072 4096)")
    sh.add_argument("--mpp", type=float, default=0.5, help="microns per pixel (default 0.5)")
    sh.add_argument("--seed", type=int, default=0)
    sh.add_argument("--channel-first", action="store_true", help="write the last slide as a flat (3, H, W) TIFF")
    sh.add_argument("--compression", choices=["zlib", "jpeg", "none"], default="zlib")
    sh.add_argument("--quiet", action="store_true", help="no progress bar")
    sh.set_defaults(func=_cmd_synth_hubmap)
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
    sn = ssub.add_parser("nuclei", help="synthetic H&E nuclei in CoNIC (.npy) and/or MoNuSAC (.tif + .xml) format")
    sn.add_argument("--out", required=True, help="output folder (with --format both: conic/ and monusac/ inside)")
    sn.add_argument("--format", choices=["conic", "monusac", "both"], default="conic")
    sn.add_argument("--n", type=int, default=40, help="CoNIC tiles (default 40)")
    sn.add_argument("--size", type=int, default=256, help="CoNIC tile size (default 256, as CoNIC)")
    sn.add_argument("--patients", type=int, default=4, help="MoNuSAC patient folders (default 4)")
    sn.add_argument("--images-per-patient", type=int, default=3, help="MoNuSAC images per patient (default 3)")
    sn.add_argument("--seed", type=int, default=0)
    sn.add_argument("--quiet", action="store_true", help="no progress bar")
    sn.set_defaults(func=_cmd_synth_nuclei)
    sr = ssub.add_parser("renogram", help="paediatric dynamic renograms as DICOM NM files with parenchyma masks")
    sr.add_argument("--out", required=True, help="output folder")
    sr.add_argument("--n", type=int, default=20, help="studies (default: 20)")
    sr.add_argument("--size", type=int, default=64, help="matrix size in pixels (default: 64)")
    sr.add_argument("--seed", type=int, default=0)
    sr.add_argument("--quiet", action="store_true", help="no progress bar")
    sr.set_defaults(func=_cmd_synth_renogram)

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

    t = sub.add_parser("tile", help="cut HuBMAP-layout slides into image/mask PNG tiles and a datalist")
    tsub = t.add_subparsers(dest="dataset", required=True)
    th = tsub.add_parser("hubmap", help="<root>/train/*.tiff + <root>/train.csv (RLE) or <id>.json polygons")
    th.add_argument("--root", required=True, help="HuBMAP-layout folder")
    th.add_argument("--out", required=True, help="output folder (images/, masks/, tiles.csv, datalist.json)")
    th.add_argument("--tile", type=int, default=1024, help="tile side (default 1024, the thesis)")
    th.add_argument("--min-tissue", type=float, default=0.02, help="minimum tissue fraction of a kept tile")
    th.add_argument("--split", choices=["slide", "tile"], default="slide",
                    help="slide (default: no slide in both sets) or tile (the thesis's random 8:2 tile split)")
    th.add_argument("--val-fraction", type=float, default=0.2)
    th.add_argument("--seed", type=int, default=0)
    th.add_argument("--quiet", action="store_true", help="no progress bar")
    th.set_defaults(func=_cmd_tile)

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
