"""``lesionlab synth <dataset>``, ``datalist``, ``datalist-glomeruli`` and ``tile hubmap``: write the embedded
synthetic data sets, the datalists of real and synthetic ones, and whole-slide tiles."""

from __future__ import annotations

import argparse
import os

from lesionlab.errors import LesionlabError

__all__ = ["add_parsers"]


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


def _cmd_synth_hubmap(args: argparse.Namespace) -> int:
    from lesionlab.data.synthetic import synth_hubmap

    paths = synth_hubmap(args.out, n_slides=args.n, shape=tuple(args.shape), seed=args.seed, mpp=args.mpp,
                         channel_first=args.channel_first, progress=not args.quiet,
                         compression=args.compression if args.compression != "none" else None)
    print(f"wrote {len(paths)} synthetic PAS-like slides ({args.shape[0]} x {args.shape[1]}) and train.csv "
          f"to {args.out}")
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


def _cmd_synth_renogram(args: argparse.Namespace) -> int:
    from lesionlab.data.synthetic.renogram import synth_renograms
    from lesionlab.pipelines.renogram import build_renogram_datalist

    synth_renograms(args.out, n=args.n, size=args.size, seed=args.seed, progress=not args.quiet)
    data = build_renogram_datalist(args.out, os.path.join(args.out, "datalist.json"), seed=args.seed)
    print(f"wrote {args.n} synthetic renograms (DICOM NM, {args.size}x{args.size}) to {args.out}; datalist.json: "
          + ", ".join(f"{len(v)} {k}" for k, v in data.items()) + " images (split by patient)")
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


def _cmd_tile(args: argparse.Namespace) -> int:
    from lesionlab.data.tiles import tile_hubmap

    path = tile_hubmap(args.root, args.out, tile=args.tile, min_tissue=args.min_tissue, split=args.split,
                       val_fraction=args.val_fraction, seed=args.seed, progress=not args.quiet)
    print(f"wrote tiles and {path}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``synth`` (and its data sets), ``datalist``, ``datalist-glomeruli``, ``tile``."""
    from lesionlab.apps import glomerulus_cli

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
