"""Classification evaluation and inference for the glomerulus bundle (seed 004 §6): metrics, ROC and confusion PNGs,
Grad-CAM overlays, and ``lesionlab infer`` on a folder of crops to a CSV of class probabilities.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lesionlab.apps.figures import plot_confusion_matrix
from lesionlab.errors import DataError, LesionlabError
from lesionlab.utils import atomic_write_text, save_figure

__all__ = [
    "IMAGE_SUFFIXES",
    "classification_report",
    "plot_roc_curves",
    "gradcam_figure",
    "ClassificationReportHandler",
    "is_classification_bundle",
    "classify_folder",
]

logger = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def classification_report(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, one-vs-rest ROC AUC and the confusion matrix (scikit-learn).

    AUC of a class absent from ``labels`` (or present everywhere) is ``None``; ``macro_auc`` averages the others.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    n = len(class_names)
    if probs.ndim != 2 or probs.shape != (len(labels), n):
        raise ValueError(f"probs must be (N, {n}) for N = {len(labels)} labels, got {probs.shape}.")
    pred = probs.argmax(1)
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=list(range(n)), zero_division=0)
    per_class = {}
    for k, name in enumerate(class_names):
        pos = labels == k
        auc = float(roc_auc_score(pos, probs[:, k])) if 0 < pos.sum() < len(labels) else None
        per_class[name] = {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(s[k]),
                           "auc": auc}
    aucs = [v["auc"] for v in per_class.values() if v["auc"] is not None]
    return {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, pred)),
        "macro_f1": float(np.mean(f)),
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(labels, pred, labels=list(range(n))).tolist(),
    }


def report_markdown(report: Mapping[str, Any], title: str) -> str:
    """The report as a markdown table (one row per class)."""
    lines = [f"# {title}", "", f"{report['n']} crops; accuracy {report['accuracy']:.4f}; macro F1 "
             f"{report['macro_f1']:.4f}; macro AUC " + (f"{report['macro_auc']:.4f}" if report["macro_auc"] is not None
                                                     else "n/a"), "",
             "| class | precision | recall | F1 | AUC | support |", "|---|---|---|---|---|---|"]
    for name, v in report["per_class"].items():
        auc = "n/a" if v["auc"] is None else f"{v['auc']:.4f}"
        lines.append(f"| {name} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {auc} | {v['support']} |")
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc_curves(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str], out_png: str,
                    title: str = "") -> str:
    """One-vs-rest ROC curve per class (seed 004 Fig. 11) with its AUC in the legend, written atomically."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    for k, name in enumerate(class_names):
        pos = np.asarray(labels) == k
        if 0 < pos.sum() < len(pos):
            fpr, tpr, _ = roc_curve(pos, probs[:, k])
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(pos, probs[:, k]):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title or "ROC, one vs rest")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_png, dpi=110)
    return out_png


def _display(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the input normalisation of a ``(3, H, W)`` tensor for display: ``(H, W, 3)`` in [0, 1]."""
    img = image.detach().cpu().float() * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return img.clamp(0, 1).permute(1, 2, 0).numpy()


def gradcam_figure(network: torch.nn.Module, images: torch.Tensor, labels: Sequence[int], class_names: Sequence[str],
                   out_png: str, target_layer: str, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> str:
    """Grad-CAM (MONAI ``GradCAM``) of the predicted class over each image, next to the image, written as PNG."""
    from monai.visualize import GradCAM

    plt = _pyplot()
    device = next(network.parameters()).device
    was_training = network.training
    # frozen layers (freeze_fraction) carry no gradient, which Grad-CAM needs: unfreeze for the maps, then restore
    flags = [p.requires_grad for p in network.parameters()]
    for p in network.parameters():
        p.requires_grad_(True)
    network.eval()
    try:
        with torch.enable_grad():
            x = images.to(device).float()
            pred = network(x).argmax(1)
            cam = GradCAM(nn_module=network, target_layers=target_layer)(x, class_idx=None)
    finally:
        for p, flag in zip(network.parameters(), flags):
            p.requires_grad_(flag)
        network.train(was_training)
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), squeeze=False)
    for i in range(n):
        shown = _display(images[i], mean, std)
        axes[0, i].imshow(shown)
        axes[0, i].set_title(f"true {class_names[int(labels[i])]}", fontsize=8)
        axes[1, i].imshow(shown)
        axes[1, i].imshow(cam[i, 0].detach().cpu().numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[1, i].set_title(f"pred {class_names[int(pred[i])]}", fontsize=8)
        for ax in axes[:, i]:
            ax.axis("off")
    fig.suptitle("Grad-CAM of the predicted class", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_png, dpi=100)
    return out_png


class ClassificationReportHandler:
    """Ignite handler for the evaluator: at the end of a run, write the classification report of every crop seen.

    Reads each decollated output's ``prob_key`` (softmax probabilities), ``label_key`` (index or one-hot) and the
    image file name; writes ``metrics.json``, ``report.md``, ``predictions.csv``, ``roc.png``, ``confusion.png`` and
    ``gradcam.png`` (Grad-CAM on the first ``n_gradcam`` crops, when ``network`` is given) into ``output_dir``.

    Args:
        output_dir: folder of the outputs.
        class_names: class names in index order.
        network: the evaluated network (for Grad-CAM). Defaults to None (no Grad-CAM).
        target_layer: Grad-CAM layer name (``stages`` is the last stage of SEResNet50Improved). Defaults to
            ``"stages"``.
        n_gradcam: crops shown with Grad-CAM. Defaults to 6.
        title: title of the report and plots.
        prob_key, label_key, image_key: output keys.
    """

    def __init__(self, output_dir: str, class_names: Sequence[str], network: torch.nn.Module | None = None,
                 target_layer: str = "stages", n_gradcam: int = 6, title: str = "Evaluation",
                 prob_key: str = "prob", label_key: str = "label", image_key: str = "image") -> None:
        self.output_dir, self.class_names, self.network = output_dir, list(class_names), network
        self.target_layer, self.n_gradcam, self.title = target_layer, n_gradcam, title
        self.prob_key, self.label_key, self.image_key = prob_key, label_key, image_key
        self.report: dict[str, Any] | None = None
        self._reset()

    def _reset(self, engine: Any = None) -> None:
        self.probs: list[np.ndarray] = []
        self.labels: list[int] = []
        self.files: list[str] = []
        self.images: list[torch.Tensor] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _collect(self, engine: Any) -> None:
        for item in engine.state.output:
            label = torch.as_tensor(item[self.label_key]).detach().cpu().flatten()
            self.labels.append(int(label.argmax()) if label.numel() > 1 else int(label.item()))
            self.probs.append(torch.as_tensor(item[self.prob_key]).detach().cpu().float().flatten().numpy())
            image = item.get(self.image_key)
            meta = getattr(image, "meta", {}) or {}
            self.files.append(str(meta.get("filename_or_obj", f"item{len(self.files)}")))
            if image is not None and len(self.images) < self.n_gradcam:
                self.images.append(torch.as_tensor(image).detach().cpu())

    def _write(self, engine: Any = None) -> None:
        if not self.labels:
            return
        probs, labels = np.stack(self.probs), np.asarray(self.labels)
        self.report = classification_report(probs, labels, self.class_names)
        out = self.output_dir
        os.makedirs(out, exist_ok=True)
        atomic_write_text(os.path.join(out, "metrics.json"), json.dumps(self.report, indent=2) + "\n")
        atomic_write_text(os.path.join(out, "report.md"), report_markdown(self.report, self.title))
        _write_csv(os.path.join(out, "predictions.csv"),
                   [{"file": f, "true": self.class_names[t], "predicted": self.class_names[int(p.argmax())],
                     **{f"p_{c}": f"{v:.6f}" for c, v in zip(self.class_names, p)}}
                    for f, t, p in zip(self.files, labels, probs)])
        plot_roc_curves(probs, labels, self.class_names, os.path.join(out, "roc.png"), self.title)
        plot_confusion_matrix(np.asarray(self.report["confusion_matrix"]), self.class_names,
                              os.path.join(out, "confusion.png"), title=self.title)
        if self.network is not None and self.images:
            gradcam_figure(self.network, torch.stack(self.images), labels[: len(self.images)], self.class_names,
                           os.path.join(out, "gradcam.png"), self.target_layer)


def _write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
    buf = io.StringIO()
    fields = list(rows[0]) if rows else ["file"]
    for r in rows:
        fields += [k for k in r if k not in fields]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def is_classification_bundle(path: str) -> bool:
    """True when the bundle folder's ``network_data_format`` output ``pred`` is class probabilities."""
    meta = os.path.join(path, "configs", "metadata.json")
    if not os.path.isfile(meta):
        return False
    with open(meta, encoding="utf-8") as f:
        pred = json.load(f).get("network_data_format", {}).get("outputs", {}).get("pred", {})
    return pred.get("type") == "probabilities"


def _input_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise DataError(path, "no such file or folder of crops")
    files = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                   if f.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(f))
    if not files:
        raise DataError(path, f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    return files


def classify_folder(bundle: str, input_path: str, output_csv: str, device: str = "cpu", stain: str | None = None,
                    overrides: Mapping[str, Any] | None = None, checkpoint: str | None = None) -> dict[str, Any]:
    """Classify every crop of a folder with a classification bundle; write one CSV row per crop.

    The bundle's ``configs/inference.json`` supplies ``preprocessing`` (loading, stain normalisation, resize,
    intensity normalisation) and ``network_def``; weights come from ``models/model.pt`` (or ``checkpoint``). Rows:
    ``file, predicted, p_<class>..., error``; a crop that cannot be read keeps its row with the error and the others
    still run. The CSV is written atomically at the end.

    Returns:
        ``{"csv", "n_files", "n_ok", "n_failed", "rows"}``.
    """
    from monai.bundle import ConfigParser
    from tqdm import tqdm

    from lesionlab.apps.deploy.archive import open_bundle
    from lesionlab.apps.deploy.config import bundle_on_path, config_file, load_state_dict, load_weights
    from lesionlab.apps.deploy.predictor import failure_reason

    files = _input_files(input_path)
    with open_bundle(bundle) as src:
        root = src.root
        cfg = config_file(root, "inference")
        if cfg is None:
            raise LesionlabError(f"{root}: bundle has no configs/inference.json")
        parser = ConfigParser()
        parser.read_config(cfg)
        parser["bundle_root"] = root
        parser["device"] = torch.device(device)
        if stain is not None:
            parser["stain"] = stain
        for k, v in (overrides or {}).items():
            parser[k] = v
        names = list(parser.get("class_names"))
        ckpt = checkpoint or os.path.join(root, "models", "model.pt")
        if not os.path.isfile(ckpt):
            raise DataError(ckpt, "no trained weights; train the bundle first or pass a checkpoint")
        with bundle_on_path(root):
            net = parser.get_parsed_content("network_def", instantiate=True)
            load_weights(net, load_state_dict(ckpt), ckpt)
            net = net.to(device).eval()
            try:
                pre = parser.get_parsed_content("preprocessing", instantiate=True)
            except Exception as err:  # usually missing stain-normalisation targets
                raise LesionlabError(
                    f"{root}: cannot build the inference preprocessing ({failure_reason(err)}). Stain targets are "
                    "read from stain_target_dir (models/stain_targets after training): pass --set "
                    "stain_target_dir=DIR, or --set stain_normalize=False for crops that need no normalisation"
                ) from err
        rows = []
        for f in tqdm(files, desc="classifying", unit="crop", disable=len(files) < 10):
            row: dict[str, Any] = {"file": f, "predicted": ""}
            try:
                item = pre({"image": f, "stain": parser.get("stain")})
                with torch.no_grad():
                    prob = torch.softmax(net(torch.as_tensor(item["image"])[None].to(device).float()), 1)[0].cpu()
                row["predicted"] = names[int(prob.argmax())]
                row.update({f"p_{c}": f"{float(v):.6f}" for c, v in zip(names, prob)})
                row["error"] = ""
            except Exception as err:  # noqa: BLE001 - one bad crop must not stop the folder
                row.update({f"p_{c}": "" for c in names})
                row["error"] = failure_reason(err)
                logger.warning("%s: %s", f, row["error"])
            rows.append(row)
    _write_csv(output_csv, rows)
    n_failed = sum(1 for r in rows if r["error"])
    return {"csv": output_csv, "n_files": len(rows), "n_ok": len(rows) - n_failed, "n_failed": n_failed, "rows": rows}
