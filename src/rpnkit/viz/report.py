"""``rpnkit report RUN_DIR``: one static HTML page for a training run, with every picture
embedded, so that it opens in a browser from disk with no server.

It holds the run's configuration, its own validations (the best one, kept in
best.safetensors, and those logged to TensorBoard: no other file keeps them), the metric
tables of its final weights (for a Faster R-CNN its mAP, per-class AP and precision-recall
curves first; n/a where there is nothing to count, as ``rpnkit eval`` prints it), the loss and
recall curves, and a gallery of proposals on validation images: the images with the best
recall first, then the worst, each at most once.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..data import DataConfig
from ..data.splits import held_out, read_split
from ..engine.checkpoint import read_run_state
from ..engine.evaluate import DetectionReport, RecallReport
from ..engine.paths import output_file
from ..engine.run_log import logged_validations
from ..engine.run_record import RECORD_FILE, RunRecord
from ..engine.runtime import load
from ..engine.trainer import BEST_FILE, EVAL_SHOWN
from ..evaluation.detection import COCO_STATS, NO_GT, format_metric
from ..evaluation.recall import MAX_DETS
from .charts import plot_loss_curves, plot_precision_recall, plot_recall_curves
from .overlays import plot_proposals_vs_gt

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: .85em; }
img { max-width: 100%; border: 1px solid #ddd; }
.gallery { display: grid; grid-template-columns: repeat(2, 1fr); gap: .6em; }
.gallery figure { margin: 0; } figcaption { font-size: .8em; color: #555; }
"""

# the gallery's pictures: two a row of the page's 1100 px, each drawn at the size it is shown
# (four a row at 400 px, shrunk to 270, were too small to read)
GALLERY_PX = (540, 500)

# records in the DOM how many images actually decoded (checked by the headless-browser test)
SCRIPT = """
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  document.body.dataset.imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesTotal = imgs.length;
});
"""


def _img(path: Path, alt: str, cls: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _cell(value: float | None) -> str:
    """A table cell to 3 decimals; n/a where there is nothing to count (pycocotools' -1: no
    GT of that size; NaN: a class without GT), as ``rpnkit eval`` prints it."""
    missing = value is None or value != value or value == NO_GT
    return "<td>n/a</td>" if missing else f"<td>{value:.3f}</td>"


def _metrics_table(metrics: dict[str, float]) -> str:
    sizes = [("all", ""), ("small", "_small"), ("medium", "_medium"), ("large", "_large")]
    head = "".join(f"<th>{name}</th>" for name, _ in sizes)
    rows = []
    for k in MAX_DETS:
        for label, key in (
            ("AR", f"AR@{k}"),
            ("recall@0.5", f"recall@{k}@0.5"),
            ("recall@0.7", f"recall@{k}@0.7"),
        ):
            cells = "".join(_cell(metrics.get(key + suffix)) for _, suffix in sizes)
            rows.append(f"<tr><td>{label} @ {k} proposals</td>{cells}</tr>")
    return f'<table id="metrics"><tr><th>measure</th>{head}</tr>{"".join(rows)}</table>'


def _validation_index(run_dir: Path, record: RunRecord | None, config: DataConfig, given):
    """The validation images: a run trained with ``--val-fraction`` held them out of its
    training data (its split.json), unless other data is given."""
    held = given is None and record is not None and record.split is not None
    index = config.read_val(default_split="train" if held else "val")
    if held:
        index = held_out(index, read_split(run_dir / record.split), f"{run_dir}'s split")
    return index


def report_data(run_dir: Path, record: RunRecord | None, **given) -> DataConfig:
    """The validation data of the report: what is given, else what the run recorded (its
    validation set, or the training set a held-out split was taken from)."""
    recorded = record.data if record is not None else None
    split_run = recorded is not None and record.split is not None and recorded.val_data is None
    data = given.get("data") or (
        (recorded.data if split_run else recorded.val_data) if recorded else None
    )
    if data is None:
        raise ValueError(f"{run_dir}: give --data (the run recorded no validation data)")

    def pick(name: str, recorded_name: str, default):
        value = given.get(name)
        if value is not None:
            return value
        return getattr(recorded, recorded_name) if recorded is not None else default

    return DataConfig(
        data=str(data),
        val_data=str(data),
        val_split=pick("split", "split" if split_run else "val_split", None),
        val_split_file=pick("split_file", "split_file" if split_run else "val_split_file", None),
        val_images=(  # where the run's images were: not where other --data's are
            given.get("images")
            if given.get("data")
            else pick("images", "images" if split_run else "val_images", None)
        ),
        format=pick("format", "format", None),
        short_side=pick("short", "short_side", 800),
        max_size=pick("max_size", "max_size", 1333),
        # a run trained on a class subset is scored on the same classes
        classes=recorded.classes if recorded is not None else None,
    )


def write_report(
    run_dir: str | Path,
    *,
    data: str | None = None,
    split: str | None = None,
    split_file: str | None = None,
    format: str | None = None,
    images: str | None = None,
    short: int | None = None,
    max_size: int | None = None,
    gallery: int = 4,
    device: str = "auto",
    progress: bool = False,
) -> Path:
    """Write ``RUN_DIR/report.html``. Validation data comes from the run's record
    (``config.yaml``, written by ``rpnkit train --val-data``) unless given."""
    run_dir = Path(run_dir)
    checkpoint = run_dir / "checkpoint.safetensors"
    if run_dir.is_file():
        raise ValueError(f"{run_dir}: is a file; a report is of a run folder ({run_dir.parent})")
    if not checkpoint.is_file():
        raise ValueError(f"{run_dir}: no checkpoint.safetensors: not a training run folder")
    output_file(run_dir / "report.html", what="HTML")  # a folder there: said before the work
    record = RunRecord.load(run_dir)
    config = report_data(
        run_dir,
        record,
        data=data,
        split=split,
        split_file=split_file,
        format=format,
        images=images,
        short=short,
        max_size=max_size,
    )
    runtime = load(checkpoint, device, short_side=config.short_side, max_size=config.max_size)
    dataset = config.eval_dataset(_validation_index(run_dir, record, config, given=data))
    # at the run's batch size: the figures are those of its metrics.json (padding: docs/cli.md)
    batch = {"batch_size": record.train.batch_size if record is not None else 4}
    recall = runtime.evaluate_proposals(dataset, progress=progress, **batch)
    detection = (
        runtime.evaluate_detections(dataset, progress=progress, **batch)
        if runtime.spec.is_detector
        else None
    )
    metrics = {**recall.metrics, **_detection_numbers(detection)}
    config_text = (run_dir / RECORD_FILE).read_text() if record is not None else ""
    with tempfile.TemporaryDirectory() as tmp:
        sections = [
            f"<h1>rpnkit run: {html.escape(run_dir.name)}</h1>",
            f"<p>{html.escape(str(run_dir.resolve()))}; validation data "
            f"{html.escape(config.val_data)} ({len(dataset)} images); written "
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</p>",
            _validation_section(run_dir),
            _detection_section(detection, Path(tmp)) if detection is not None else "",
            "<h2>Proposal recall</h2>" + _metrics_table(recall.metrics),
            _curves_section(run_dir, recall, Path(tmp)),
            _gallery_section(dataset, recall, gallery, Path(tmp)),
            "<h2>Configuration</h2><pre id='config'>"
            f"{html.escape(config_text or 'no config.yaml in the run folder')}</pre>",
            "<h2>All metrics</h2><pre id='metrics-json'>"
            f"{html.escape(json.dumps(metrics, indent=1))}</pre>",
        ]
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>rpnkit report: "
        f"{html.escape(run_dir.name)}</title><style>{STYLE}</style>"
        f"<script>{SCRIPT}</script></head><body>{''.join(sections)}</body></html>"
    )
    out = run_dir / "report.html"
    tmp_out = out.with_suffix(".html.tmp")
    tmp_out.write_text(page)
    tmp_out.replace(out)
    return out


def _run_folder_of_best(run_dir: Path) -> Path:
    """Where a run keeps its best validation and its TensorBoard events: the run folder, or
    for the alternating schedule its last step's (``step4_detector``)."""
    for folder in (run_dir, run_dir / "step4_detector"):
        if (folder / BEST_FILE).is_file() or (folder / "tensorboard").is_dir():
            return folder
    return run_dir


def _validation_section(run_dir: Path) -> str:
    """The run's own validations: the best one (``best.safetensors``, written with
    ``--eval-every``) and every periodic one logged to TensorBoard; nothing when the run
    kept neither."""
    folder = _run_folder_of_best(run_dir)
    parts = [_best_line(folder / BEST_FILE)] if (folder / BEST_FILE).is_file() else []
    history = logged_validations(folder)
    if history:
        shown = [k for k in EVAL_SHOWN if any(k in row for row in history.values())]
        head = "".join(f"<th>{html.escape(k)}</th>" for k in shown)
        rows = "".join(
            f"<tr><td>{step}</td>{''.join(_cell(history[step].get(k)) for k in shown)}</tr>"
            for step in sorted(history)
        )
        parts.append(
            "<p>Validations logged during training (TensorBoard, eval/):</p>"
            f'<table id="validations"><tr><th>step</th>{head}</tr>{rows}</table>'
        )
    return "<h2>Validation during training</h2>" + "".join(parts) if parts else ""


def _best_line(path: Path) -> str:
    """The best validation that ``path`` (a run's best.safetensors) records in its header."""
    try:
        best = read_run_state(path).best
    except ValueError as err:  # the page still reports the final weights
        return f"<p id='best'>{html.escape(str(err))}</p>"
    if not isinstance(best, dict) or not {"metric", "value", "step"} <= best.keys():
        return f"<p id='best'>{html.escape(str(path))}: records no best validation</p>"
    return (
        f"<p id='best'>best validation during training: {html.escape(str(best['metric']))} "
        f"{format_metric(best['value'])} at step {best['step']}, its weights kept in "
        f"{html.escape(str(path))}. The tables below measure the final weights "
        "(checkpoint.safetensors).</p>"
    )


def _detection_numbers(report: DetectionReport | None) -> dict:
    """A detector's metrics for the page's list: all but the precision-recall curves (drawn)."""
    return {k: v for k, v in report.metrics.items() if k != "pr_curves"} if report else {}


def _detection_section(report: DetectionReport, tmp: Path) -> str:
    """A detector's mAP: COCO's six numbers, VOC's, the per-class table, precision-recall."""
    m = report.metrics
    head = "".join(f"<th>{k}</th>" for k in COCO_STATS) + "<th>VOC07 mAP50</th>"
    cells = "".join(_cell(m[k]) for k in COCO_STATS)
    summary = (
        f'<table id="detection"><tr>{head}</tr><tr>{cells}{_cell(m["VOC07_mAP50"])}</tr></table>'
    )
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>{_cell(ap)}</tr>"
        for name, ap in m["per_class_AP"].items()
    )
    per_class = f'<table id="per-class"><tr><th>class</th><th>AP</th></tr>{rows}</table>'
    plot_precision_recall(m["pr_curves"], tmp / "pr.png")
    curve = _img(tmp / "pr.png", "precision against recall", "curve")
    return f"<h2>Detection mAP</h2>{summary}<p>{curve}</p>{per_class}"


def _curves_section(run_dir: Path, recall: RecallReport, tmp: Path) -> str:
    """The loss curves (when the run logged them) and the recall curves."""
    curves = []
    if (run_dir / "train_log.csv").is_file():
        plot_loss_curves(run_dir / "train_log.csv", tmp / "loss.png")
        curves.append(_img(tmp / "loss.png", "training losses", "curve"))
    by_proposals, by_iou = recall.curves()
    plot_recall_curves({"model": by_proposals}, tmp / "recall.png", by_iou={"model": by_iou})
    curves.append(_img(tmp / "recall.png", "recall curves", "curve"))
    return "<h2>Curves</h2>" + "".join(f"<p>{c}</p>" for c in curves)


def gallery_picks(per_image: torch.Tensor, gallery: int) -> tuple[list[int], list[int]]:
    """The indices of the ``gallery`` images of best recall (best first) and of the
    ``gallery`` of worst (worst first) among those with GT (``per_image`` NaN: none); with
    fewer than twice ``gallery`` such images, each is shown once: the better half (the
    middle one included) among the best, the rest among the worst."""
    order = [
        int(i)
        for i in torch.argsort(torch.nan_to_num(per_image, nan=-1.0), descending=True, stable=True)
        if not torch.isnan(per_image[i])
    ]
    best = min(gallery, (len(order) + 1) // 2)
    worst = min(gallery, len(order) - best)
    return order[:best], order[len(order) - worst :][::-1]


def _gallery_section(dataset, recall: RecallReport, gallery: int, tmp: Path) -> str:
    """The images with the best recall@100 at IoU 0.5 first, then the worst."""
    per_image = recall.table.recall_per_image(100)  # NaN for images without GT
    best, worst = gallery_picks(per_image, gallery)
    figures = []
    for title, chosen in (("best recall", best), ("worst recall", worst)):
        for i in chosen:
            name = f"{title.split()[0]}_{i}.png"
            item = dataset[i]
            proposals, gt = recall.kept[i]
            plot_proposals_vs_gt(
                [item["image"]],
                [proposals],
                [gt],
                tmp / name,
                top_k=10,
                network_input=True,
                size_px=GALLERY_PX,
            )
            caption = (
                f"{title}: {html.escape(str(item['file_name']))}, recall@100 at "
                f"IoU 0.5 = {float(per_image[i]):.2f}"
            )
            figures.append(
                f"<figure>{_img(tmp / name, caption, 'gallery-image')}"
                f"<figcaption>{caption}</figcaption></figure>"
            )
    shown = len(best) + len(worst)
    capped = (
        f" Only {shown} validation image(s) have GT: each is shown once."
        if shown < 2 * gallery
        else ""
    )
    return (
        "<h2>Validation images: best recall first, then worst</h2>"
        "<p>Top 10 proposals (magenta); GT found among the top 100 at IoU 0.5 (green, "
        f"dashed) and missed (red).{capped}</p><div class='gallery'>{''.join(figures)}</div>"
    )
