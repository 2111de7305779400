import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import saved_figures
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.patches import Patch, Rectangle
from PIL import Image

from rpnkit.cli import main
from rpnkit.data import read_dataset
from rpnkit.engine.results import DetectionResult, ProposalResult
from rpnkit.viz import overlays
from rpnkit.viz.charts import plot_loss_curves
from rpnkit.viz.export import export_results
from rpnkit.viz.figures import (
    GT_COLOUR,
    IGNORED_COLOUR,
    MISSED_COLOUR,
    NEGATIVE_COLOUR,
    POSITIVE_COLOUR,
    PROPOSAL_COLOUR,
    TITLE_PX,
)
from rpnkit.viz.overlays import (
    LabelPanel,
    plot_anchor_labels,
    plot_anchors_at_position,
    plot_label_panels,
    plot_proposals_vs_gt,
    plot_sampled_anchors,
    save_overlay,
)

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon"


def _image():
    return torch.rand(3, 96, 128)


def test_anchor_picture_is_a_png_of_the_requested_size(tmp_path):
    anchors = torch.tensor([[10.0, 10, 50, 50], [0, 20, 60, 40], [20, 0, 40, 60]])
    n = plot_anchors_at_position(_image(), anchors, tmp_path / "a.png", size_px=(400, 300))
    assert n == 3
    with Image.open(tmp_path / "a.png") as img:
        assert img.format == "PNG" and img.size == (400, 300)


def test_anchor_picture_keys_each_level_and_the_position_in_its_legend(tmp_path, monkeypatch):
    # the anchors were once drawn in one colour and the position's mark was keyed nowhere
    figures = saved_figures(monkeypatch)
    anchors = torch.tensor([[10.0, 10, 50, 50], [0, 20, 60, 40], [20, 0, 40, 60]])
    levels = [("stride 4", 2), ("stride 8", 1)]
    assert plot_anchors_at_position(_image(), anchors, tmp_path / "a.png", levels=levels) == 3
    (fig,) = figures
    (ax,) = fig.axes
    keyed = _keys_and_drawn(ax)
    assert [(label, n) for label, _, _, n in keyed] == [("stride 4 (2)", 2), ("stride 8 (1)", 1)]
    assert keyed[0][1] != keyed[1][1]  # a colour per level
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "position"
    (mark,) = ax.lines
    assert tuple(mark.get_xydata()[0]) == (30.0, 30.0)  # the anchors' mean centre
    _assert_legends_beside_the_images(fig)
    with pytest.raises(ValueError, match="levels count 2 anchors, got 3"):
        plot_anchors_at_position(_image(), anchors, tmp_path / "b.png", levels=[("a", 2)])


def test_sampled_anchor_picture_caps_negatives(tmp_path):
    pos = torch.tensor([[10.0, 10, 50, 50]])
    neg = torch.tensor([[0.0, 0, 10, 10]]).repeat(100, 1)
    n = plot_sampled_anchors(_image(), pos, pos, neg, tmp_path / "s.png", max_negatives=30)
    assert n == 31
    with Image.open(tmp_path / "s.png") as img:
        assert img.size == (640, 640)


def test_proposal_picture_draws_top_k_per_image(tmp_path):
    props = [torch.tensor([[10.0, 10, 50, 50]] * 20), torch.zeros(0, 4)]
    gts = [torch.tensor([[10.0, 10, 50, 50], [70, 70, 90, 90]]), torch.zeros(0, 4)]
    n = plot_proposals_vs_gt([_image(), _image()], props, gts, tmp_path / "p.png", top_k=5)
    assert n == 5
    with Image.open(tmp_path / "p.png") as img:
        assert img.size == (640, 360)


def test_more_pictures_have_the_expected_size_and_content(tmp_path):
    import csv

    from rpnkit.viz.charts import plot_recall_curves
    from rpnkit.viz.overlays import (
        plot_anchor_centres,
        plot_anchor_labels,
        plot_nms_before_after,
        plot_objectness_maps,
    )

    img = _image()
    assert plot_anchor_centres(img, torch.rand(12, 2) * 90, tmp_path / "c.png") == 12
    box = torch.tensor([[10.0, 10, 50, 50]])
    drawn = plot_anchor_labels(
        img,
        box,
        box.repeat(3, 1),
        box.repeat(300, 1),
        box.repeat(5, 1),
        tmp_path / "l.png",
        max_each=100,
    )
    assert drawn == 3 + 100 + 5
    assert (
        plot_objectness_maps(img, [torch.rand(12, 16), torch.rand(6, 8)], tmp_path / "o.png") == 2
    )
    assert plot_nms_before_after(img, box.repeat(7, 1), box, tmp_path / "n.png") == (7, 1)
    curve = {"k": [1, 10, 100], "AR": [0.1, 0.3, 0.5], "recall@0.5": [0.2, 0.5, 0.8]}
    by_iou = {"iou": [0.5, 0.75, 1.0], "recall@100": [0.8, 0.5, 0.0]}
    assert (
        plot_recall_curves({"a": curve, "b": curve}, tmp_path / "r.png", by_iou={"a": by_iou}) == 5
    )
    log = tmp_path / "train_log.csv"
    with log.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "loss", "loss_objectness", "loss_rpn_box"])
        w.writeheader()
        for s in range(5):
            w.writerow(
                {"step": s, "loss": 1 / (s + 1), "loss_objectness": 0.5, "loss_rpn_box": 0.1}
            )
    assert plot_loss_curves(log, tmp_path / "loss.png") == 3
    with log.open("w", newline="") as f:  # a run with clipping logs the norm: one more panel
        w = csv.DictWriter(f, fieldnames=["step", "loss", "grad_norm"])
        w.writeheader()
        for s in range(5):
            w.writerow({"step": s, "loss": 1 / (s + 1), "grad_norm": 10 / (s + 1)})
    assert plot_loss_curves(log, tmp_path / "loss_norm.png") == 2
    expected = {
        "c.png": (640, 640),
        "l.png": (640, 640),
        "o.png": (780, 300),
        "n.png": (1000, 500),
        "r.png": (1000, 420),
        "loss.png": (900, 420),
        "loss_norm.png": (900, 420),
    }
    for name, size in expected.items():
        with Image.open(tmp_path / name) as png:
            assert png.format == "PNG" and png.size == size, name


def test_objectness_maps_have_a_colour_key_and_say_their_highest(tmp_path, monkeypatch):
    # the colours meant nothing on the picture: no key, no figure
    figures = saved_figures(monkeypatch)
    maps = [torch.full((4, 6), 0.25), torch.full((2, 3), 0.75)]
    assert overlays.plot_objectness_maps(_image(), maps, tmp_path / "o.png") == 2
    (fig,) = figures
    image, first, second, key = fig.axes  # the panels, then the colour bar
    assert [first.get_title(), second.get_title()] == [
        "level 0: 4x6, max 0.25",
        "level 1: 2x3, max 0.75",
    ]
    assert [t.get_text() for t in key.texts] == ["objectness (a position's best anchor)  0", "1"]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    below = key.get_window_extent(canvas.get_renderer())
    for ax in (image, first, second):  # under the panels, hiding none
        assert not below.overlaps(ax.images[0].get_window_extent(canvas.get_renderer()))


def test_the_total_loss_is_drawn_over_its_terms(tmp_path, monkeypatch):
    # the total lay under a term equal to it, in a colour of the cycle: keyed, not seen
    from rpnkit.viz import charts

    figures = saved_figures(monkeypatch, charts)
    log = tmp_path / "train_log.csv"
    log.write_text("step,loss,loss_objectness\n0,0.5,0.5\n1,0.4,0.4\n2,0.3,0.3\n")
    assert charts.plot_loss_curves(log, tmp_path / "loss.png") == 2
    (ax,) = figures[0].axes
    total = next(line for line in ax.lines if line.get_label() == "loss")
    assert total.get_color() == "black" and total.get_linestyle() == "--"
    assert total.get_zorder() > max(line.get_zorder() for line in ax.lines if line is not total)
    assert all(float(tick).is_integer() for tick in ax.get_xticks())


def test_precision_recall_picture(tmp_path, monkeypatch):
    from rpnkit.viz import charts
    from rpnkit.viz.charts import plot_precision_recall

    recall = [i / 100 for i in range(101)]
    curves = {
        "recall": recall,
        "precision@0.5": [1 - r / 2 for r in recall],
        "precision@0.75": [1 - r for r in recall],
        "per_class@0.5": {"cat": [1.0] * 101, "dog": [0.5] * 101},
    }
    figures = saved_figures(monkeypatch, charts)
    assert plot_precision_recall(curves, tmp_path / "pr.png") == 4
    with Image.open(tmp_path / "pr.png") as png:
        assert png.size == (1000, 420)
    per_class = figures[0].axes[1]
    assert [t.get_text() for t in per_class.get_legend().get_texts()] == [
        "cat AP50 1.00",
        "dog AP50 0.50",
    ]  # the best first, each with its AP
    assert per_class.get_title() == "per class, IoU 0.5 (the best 2 of 2)"
    # nothing to draw: said in the panels, not two empty frames
    assert plot_precision_recall({"recall": recall}, tmp_path / "none.png") == 0
    texts = [t.get_text() for ax in figures[1].axes for t in ax.texts]
    assert texts == ["no curve: no detection matched a GT box (AP 0)"] * 2


def test_save_overlay_draws_proposals_and_detections_of_an_image_file(tmp_path):
    source = RACCOON / "images" / "raccoon-1.jpg"
    boxes = torch.tensor([[50.0, 60, 300, 350], [100, 100, 200, 200], [0, 0, 640, 400]])
    scores = torch.tensor([0.9, 0.6, 0.3])
    proposals = ProposalResult(1, "raccoon-1.jpg", boxes, scores, (417, 650), source=source)
    path = save_overlay(proposals, tmp_path / "proposals", top=2)
    assert path == tmp_path / "proposals" / "raccoon-1.jpg.png"
    with Image.open(path) as png:  # the photo's own shape (650 x 417), a band for the title
        assert png.format == "PNG" and png.size == (650, 417 + TITLE_PX)
    detections = DetectionResult(
        1,
        "raccoon-1.jpg",
        boxes[:2],
        scores[:2],
        torch.tensor([1, 2]),
        ("raccoon", "dog"),
        (417, 650),
        source=source,
    )
    path = save_overlay(detections, tmp_path / "detections")
    assert path == tmp_path / "detections" / "raccoon-1.jpg.png"
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (650, 417 + TITLE_PX)


def _photo(path: Path, width: int, height: int) -> Path:
    """A black image file of ``width`` x ``height``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height)).save(path)
    return path


def test_overlays_of_images_of_one_stem_keep_apart_and_are_counted_as_written(tmp_path):
    # a.jpg and a.png once overwrote one a.png while the run counted 2 overlays; a.jpg again
    # in another folder (a dataset's image folders) must not overwrite the first either
    sources = [
        _photo(tmp_path / "in" / "a.jpg", 64, 48),
        _photo(tmp_path / "in" / "a.png", 64, 48),
        _photo(tmp_path / "in" / "b" / "a.jpg", 64, 48),
    ]
    results = [
        ProposalResult(i, s.name, torch.tensor([[4.0, 4, 40, 30]]), torch.ones(1), (48, 64), s)
        for i, s in enumerate(sources)
    ]
    written = export_results(results, tmp_path / "p.json", overlays=tmp_path / "ov")
    names = sorted(p.name for p in (tmp_path / "ov").iterdir())
    assert names == ["a.jpg-2.png", "a.jpg.png", "a.png.png"]
    assert written.overlays == len(names) == 3
    assert f"3 overlays in {tmp_path / 'ov'}" in written.describe(
        "proposals", "p.json", tmp_path / "ov"
    )


def test_overlay_of_a_large_image_is_drawn_shrunk_in_its_shape_with_its_boxes_in_place(
    tmp_path, monkeypatch
):
    # a 3000 x 1000 photo: drawn on a copy at most OVERLAY_MAX_SIDE wide (a 14000 x 13000
    # scan once took 11 GB), in a PNG of its aspect (once 800 x 600 whatever the image)
    from rpnkit.viz import overlays

    source = _photo(tmp_path / "wide.jpg", 3000, 1000)
    shown = []
    panel = overlays.image_panel

    def recording(ax, image, *args, **kwargs):
        shown.append(image.shape)
        return panel(ax, image, *args, **kwargs)

    monkeypatch.setattr(overlays, "image_panel", recording)
    box = torch.tensor([[1500.0, 250, 2700, 750]])  # original pixels
    result = ProposalResult(0, "wide.jpg", box, torch.ones(1), (1000, 3000), source)
    path = save_overlay(result, tmp_path / "ov")
    side = overlays.OVERLAY_MAX_SIDE
    height = round(1000 * side / 3000)
    assert shown == [(height, side, 3)]  # the shrunk copy, never the full image
    with Image.open(path) as png:
        assert png.size == (side, height + TITLE_PX)
        pixels = np.asarray(png.convert("RGB")).astype(int)
    # the box's outline (magenta on black) where the box lands, scaled: x * side / 3000
    magenta = (pixels[..., 0] > 180) & (pixels[..., 1] < 140) & (pixels[..., 2] > 180)
    scale = side / 3000
    columns = np.flatnonzero(magenta.sum(0) > 100)  # its vertical sides
    rows = np.flatnonzero(magenta.sum(1) > 300)  # its horizontal sides
    for found, (low, high) in (
        (columns, (1500 * scale, 2700 * scale)),
        (rows, (250 * scale + TITLE_PX, 750 * scale + TITLE_PX)),
    ):
        assert abs(found.min() - low) <= 2 and abs(found.max() - high) <= 2, (found, low, high)


def test_save_overlay_refuses_an_image_given_in_memory(tmp_path):
    result = ProposalResult(0, "frame.png", torch.zeros(0, 4), torch.zeros(0), (96, 128))
    with pytest.raises(ValueError, match=r"frame\.png.*in memory"):
        save_overlay(result, tmp_path)
    assert not any(tmp_path.iterdir())


def test_loss_curves_refuse_a_file_that_is_not_a_training_log(tmp_path, capsys):
    metrics = tmp_path / "metrics.json"  # a run's other file: once an AttributeError
    metrics.write_text(json.dumps({"AR@100": 0.5, "mAP": 0.25}, indent=2))
    photo = RACCOON / "images" / "raccoon-1.jpg"  # once "'utf-8' codec can't decode", no file
    extra = tmp_path / "extra.csv"
    extra.write_text("step,loss\n0,1.0\n1,0.5,7\n")
    word = tmp_path / "word.csv"
    word.write_text("step,loss\n0,1.0\n1,one\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    why = {
        metrics: "expected a 'step' column and loss columns, found '{'",
        photo: "not a text file",
        extra: "3 fields, the header has 2",
        word: "could not convert string to float: 'one'",
        empty: "expected a 'step' column and loss columns, found nothing",
    }
    for path, reason in why.items():
        with pytest.raises(ValueError) as err:
            plot_loss_curves(path, tmp_path / "loss.png")
        line = {extra: " line 3", word: " line 3"}.get(path, "")
        assert str(err.value) == f"{path}{line}: not a training log (train_log.csv): {reason}"
    assert not (tmp_path / "loss.png").exists()
    # the command: that one line, no traceback
    assert main(["show", "losses", str(metrics), "--out", str(tmp_path / "loss.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rpnkit show: error: {metrics}: not a training log") and "\n" not in err


def test_show_anchors_takes_the_position_in_the_images_own_pixels(tmp_path, monkeypatch):
    from rpnkit.modeling.presets import preset_config
    from rpnkit.viz import overlays, show

    drawn = {}

    def capture(image, anchors, out, *, levels, title):
        drawn.update(size=image.shape[1:], anchors=anchors, levels=levels, title=title)
        return len(anchors)

    monkeypatch.setattr(overlays, "plot_anchors_at_position", capture)
    photo = RACCOON / "images" / "raccoon-1.jpg"
    with Image.open(photo) as img:
        width, height = img.size
    config = preset_config("tiny")
    options = {"short": 160, "max_size": 240}
    for x, y in ((0, 0), (width - 1, height - 1), (width * 3 // 4, height // 3)):
        show.show_anchors(config, photo, tmp_path / "a.png", x=x, y=y, **options)
        h, w = drawn["size"]
        centres = (drawn["anchors"][:, :2] + drawn["anchors"][:, 2:]) / 2
        want = torch.tensor([x * w / width, y * h / height])  # the same spot, resized
        assert ((centres - want).abs() <= 32).all()  # the nearest position of each level
        assert drawn["title"] == f"anchors at ({x}, {y}), every level"
        assert drawn["levels"] == [(f"stride {lv.stride}", lv.num_anchors)
                                   for lv in config.rpn.anchors.levels]  # fmt: skip
    with pytest.raises(ValueError, match=f"x {width} is outside the image \\(width {width} px\\)"):
        show.show_anchors(config, photo, tmp_path / "a.png", x=width, **options)


def test_show_says_the_file_it_wrote_when_the_name_has_no_suffix(tmp_path, capsys, monkeypatch):
    from rpnkit.viz.figures import png_path

    assert png_path("e6") == Path("e6.png") and png_path("a/b.v2.png") == Path("a/b.v2.png")
    assert png_path("x.jpg") == Path("x.jpg")  # a suffix of its own: matplotlib's format
    monkeypatch.chdir(tmp_path)
    photo = RACCOON / "images" / "raccoon-1.jpg"
    size = ["--short-side", "96", "--max-size", "144"]
    assert main(["show", "anchors", str(photo), "--preset", "tiny", "--out", "e6", *size]) == 0
    assert capsys.readouterr().out.strip() == "wrote e6.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e6.png"]


def test_show_labels_needs_an_image_with_boxes(tmp_path, capsys):
    photo = RACCOON / "images" / "raccoon-1.jpg"
    out = tmp_path / "labels.png"
    assert main(["show", "labels", str(photo), "--preset", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"rpnkit show: error: {photo}: an image without annotations: nothing to label; rpnkit "
        "show labels needs a dataset image with boxes (a COCO JSON, VOC folder, YOLO data.yaml "
        "or CSV, and --index to pick the image)"
    )
    # a dataset's image without a box: which one
    coco = {
        "images": [{"id": 7, "file_name": photo.name, "width": 650, "height": 417}],
        "annotations": [],
        "categories": [{"id": 1, "name": "raccoon"}],
    }
    (tmp_path / "bare.json").write_text(json.dumps(coco))
    (tmp_path / "bare").mkdir()
    shutil.copy(photo, tmp_path / "bare" / photo.name)  # a COCO JSON's images: a folder named so
    args = ["show", "labels", str(tmp_path / "bare.json"), "--preset", "tiny"]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"rpnkit show: error: {tmp_path / 'bare.json'}: image 0 ({photo.name})")
    assert "has no box: nothing to label" in err
    assert not out.exists()


def test_show_labels_titles_the_image_and_keys_its_counts_in_a_legend(tmp_path, monkeypatch):
    # the colours were once only named in the title ("39 positive (yellow), ..."): no legend
    panels, figures = [], saved_figures(monkeypatch)
    original = overlays.plot_label_panels

    def recording(image, gt, drawn, path, **kwargs):
        panels.extend(drawn)
        return original(image, gt, drawn, path, **kwargs)

    monkeypatch.setattr(overlays, "plot_label_panels", recording)
    out = tmp_path / "labels.png"
    args = ["show", "labels", str(RACCOON), "--split-file", str(RACCOON / "test_labels.csv")]
    args += ["--index", "1", "--preset", "tiny", "--short-side", "96", "--max-size", "144"]
    assert main([*args, "--out", str(out)]) == 0
    first = read_dataset(RACCOON, split_file=RACCOON / "test_labels.csv").records[1]
    (panel,) = panels
    assert panel.title == f"{first.file_name}: anchors as the matcher labels them"
    assert len(panel.positive) > 0 and len(panel.negative) > LABELS_DRAWN
    (fig,) = figures
    (ax,) = fig.axes
    counts = (len(panel.positive), len(panel.negative), len(panel.ignored), len(first.boxes))
    shown = [min(n, LABELS_DRAWN) for n in counts[:3]] + [counts[3]]
    expected = [
        (f"{name} ({n})" if n == m else f"{name} ({n}, {m} drawn)", colour, "-", m)
        for name, n, m, colour in zip(
            ("positive", "negative", "ignored", "GT"), counts, shown, KINDS
        )
    ]
    assert _keys_and_drawn(ax) == [e for e in expected if e[3] or e[0].startswith("GT")]
    _assert_legends_beside_the_images(fig)
    with Image.open(out) as png:
        assert png.size == (640, 640)


LABELS_DRAWN = 200  # show.LABELS_DRAWN
KINDS = [to_rgb(c) for c in (POSITIVE_COLOUR, NEGATIVE_COLOUR, IGNORED_COLOUR, GT_COLOUR)]


def _keys_and_drawn(ax) -> list[tuple[str, tuple, str, int]]:
    """Each legend entry of ``ax``: its label, its key's colour (RGB) and line style, and the
    number of boxes drawn in the panel in that colour and style. Every box drawn is of a
    colour and style that the legend keys."""
    legend = ax.get_legend()
    assert legend is not None, "no legend"
    drawn = Counter(
        (to_rgb(p.get_edgecolor()), p.get_linestyle())
        for p in ax.patches
        if isinstance(p, Rectangle)
    )
    keys = [
        (text.get_text(), to_rgb(key.get_edgecolor()), key.get_linestyle())
        for text, key in zip(legend.get_texts(), legend.legend_handles)
        if isinstance(key, Patch)  # a box's key (not a marker's)
    ]
    assert set(drawn) <= {(colour, style) for _, colour, style in keys}, (drawn, keys)
    return [(label, colour, style, drawn[colour, style]) for label, colour, style in keys]


def _assert_legends_beside_the_images(fig) -> None:
    """Each panel's legend lies in the figure and hides no panel's image nor another legend."""
    canvas = FigureCanvasAgg(fig)  # save_figure closed it: pyplot took its canvas away
    canvas.draw()  # the panels' aspect applied: where the images and legends end up
    renderer = canvas.get_renderer()
    legends = [ax.get_legend().get_window_extent(renderer) for ax in fig.axes]
    images = [ax.images[0].get_window_extent(renderer) for ax in fig.axes]
    for i, legend in enumerate(legends):
        assert fig.bbox.x0 <= legend.x0 and legend.x1 <= fig.bbox.x1
        assert fig.bbox.y0 <= legend.y0 and legend.y1 <= fig.bbox.y1
        assert not any(legend.overlaps(image) for image in images)
        assert not any(legend.overlaps(other) for other in legends[i + 1 :])


def test_label_picture_keys_each_label_in_a_legend_of_the_colours_drawn(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    box = torch.tensor([[10.0, 10, 50, 50]])
    n = plot_anchor_labels(
        _image(),
        box,
        box.repeat(3, 1),
        box.repeat(300, 1) + 1,
        box.repeat(5, 1) + 2,
        tmp_path / "l.png",
        max_each=100,
    )
    assert n == 3 + 100 + 5
    (fig,) = figures
    (ax,) = fig.axes
    positive, negative, ignored, gt = KINDS
    assert _keys_and_drawn(ax) == [
        ("positive (3)", positive, "-", 3),
        ("negative (300, 100 drawn)", negative, "-", 100),
        ("ignored (5)", ignored, "-", 5),
        ("GT (1)", gt, "-", 1),
    ]
    _assert_legends_beside_the_images(fig)


def test_a_cascade_stage_without_negatives_leaves_them_out_of_its_legend(tmp_path, monkeypatch):
    # stage 1's region assigner labels no anchor negative: "negative (0)" would say it did
    figures = saved_figures(monkeypatch)
    box, none = torch.tensor([[10.0, 10, 50, 50]]), torch.zeros(0, 4)
    panels = [
        LabelPanel("stage 1", box.repeat(2, 1), none, box.repeat(4, 1), has_negatives=False),
        LabelPanel("stage 2", box, none, none),
    ]
    gt = box.repeat(2, 1)
    assert plot_label_panels(_image(), gt, panels, tmp_path / "c.png", size_px=(800, 400)) == 7
    (fig,) = figures
    positive, negative, ignored, green = KINDS
    assert [_keys_and_drawn(ax) for ax in fig.axes] == [
        [
            ("positive (2)", positive, "-", 2),
            ("ignored (4)", ignored, "-", 4),
            ("GT (2)", green, "-", 2),
        ],
        [
            ("positive (1)", positive, "-", 1),
            ("negative (0)", negative, "-", 0),
            ("ignored (0)", ignored, "-", 0),
            ("GT (2)", green, "-", 2),
        ],
    ]
    _assert_legends_beside_the_images(fig)


def test_sampled_anchor_picture_keys_its_kinds_in_a_legend(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    pos = torch.tensor([[10.0, 10, 50, 50]])
    neg = torch.tensor([[0.0, 0, 10, 10]]).repeat(100, 1)
    plot_sampled_anchors(_image(), pos + 1, pos, neg, tmp_path / "s.png", max_negatives=30)
    (fig,) = figures
    positive, negative, _, gt = KINDS
    assert _keys_and_drawn(fig.axes[0]) == [
        ("positive (1)", positive, "-", 1),
        ("negative (100, 30 drawn)", negative, "-", 30),
        ("GT (1)", gt, "-", 1),
    ]
    _assert_legends_beside_the_images(fig)


def test_proposals_vs_gt_picture_keys_proposals_found_and_missed_gt(tmp_path, monkeypatch):
    # found and missed GT were told apart by colour alone (the report's text, the CLI's help)
    figures = saved_figures(monkeypatch)
    props = [torch.tensor([[10.0, 10, 50, 50]] * 20), torch.zeros(0, 4)]
    gts = [torch.tensor([[10.0, 10, 50, 50], [70, 70, 90, 90]]), torch.zeros(0, 4)]
    plot_proposals_vs_gt([_image(), _image()], props, gts, tmp_path / "p.png", top_k=5)
    (fig,) = figures
    magenta, green, red = (to_rgb(c) for c in (PROPOSAL_COLOUR, GT_COLOUR, MISSED_COLOUR))
    assert [_keys_and_drawn(ax) for ax in fig.axes] == [
        [
            ("proposals (5)", magenta, "-", 5),
            ("GT found (1)", green, "--", 1),
            ("GT missed (1)", red, "--", 1),
        ],
        [
            ("proposals (0)", magenta, "-", 0),
            ("GT found (0)", green, "--", 0),
            ("GT missed (0)", red, "--", 0),
        ],
    ]
    _assert_legends_beside_the_images(fig)
    # "found" counts more proposals than are drawn: the title says how many of each
    # (a GT box found only by the 57th proposal showed green with nothing drawn on it)
    assert fig.axes[0].get_title() == "top 5 drawn; GT found in top 100: 1/2"


def test_show_of_an_unreadable_image_is_one_line_naming_it(tmp_path, capsys):
    image = tmp_path / "cut.jpg"
    image.write_bytes((RACCOON / "images" / "raccoon-1.jpg").read_bytes()[:2000])
    argv = ["show", "labels", str(image), "--preset", "tiny", "--out", str(tmp_path / "x.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"rpnkit show: error: {image}: unreadable")
    assert not (tmp_path / "x.png").exists()


def test_show_grid_magnifies_the_middle_of_a_level_too_dense_to_see(tmp_path, monkeypatch):
    # stride 4 over a 1248 px image drew 62,400 dots on 640 px: a solid sheet, with moire
    from rpnkit.modeling.presets import preset_config
    from rpnkit.viz import show

    drawn = {}

    def capture(image, centres, out, *, title):
        drawn.update(size=tuple(image.shape[1:]), centres=centres, title=title)
        return len(centres)

    monkeypatch.setattr(overlays, "plot_anchor_centres", capture)
    photo = RACCOON / "images" / "raccoon-1.jpg"
    config = preset_config("effnet-lite0-fpn")
    show.show_grid(config, photo, tmp_path / "g.png", level=0)
    assert drawn["size"] == (320, 320)  # 80 positions across: 8 picture pixels apart
    assert drawn["title"].endswith("; the middle 320x320 px shown")
    assert len(drawn["centres"]) == 80 * 80
    assert (drawn["centres"] >= 0).all() and (drawn["centres"] < 320).all()
    show.show_grid(config, photo, tmp_path / "g.png", level=3)  # stride 32: whole
    assert "shown" not in drawn["title"] and max(drawn["size"]) > 320


def test_nms_picture_tells_the_kept_boxes_from_the_suppressed(tmp_path, monkeypatch):
    # the two panels looked alike: nothing said which boxes NMS had removed
    figures = saved_figures(monkeypatch)
    before = torch.tensor([[10.0, 10, 50, 50], [12, 12, 52, 52], [60, 60, 90, 90]])
    kept = torch.tensor([True, False, True])
    assert overlays.plot_nms_before_after(_image(), before, before[kept], tmp_path / "n.png",
                                          kept=kept) == (3, 2)  # fmt: skip
    (fig,) = figures
    magenta, blue = to_rgb(PROPOSAL_COLOUR), to_rgb(NEGATIVE_COLOUR)
    assert _keys_and_drawn(fig.axes[0]) == [("kept (2)", magenta, "-", 2),
                                            ("suppressed (1)", blue, ":", 1)]  # fmt: skip
    assert _keys_and_drawn(fig.axes[1]) == [("kept (2)", magenta, "-", 2)]
    _assert_legends_beside_the_images(fig)
