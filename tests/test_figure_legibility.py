"""Pictures people can read: crowded detection labels kept inside the image and apart, the
report's gallery at a readable size, the anchor picture's position mark under the anchors,
many positives of show labels sampled, and the network input's size in the titles of the
pictures of the resized image."""

import base64
import io
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import saved_figures
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.patches import Rectangle
from PIL import Image

from rpnkit.engine.checkpoint import ModelSpec, save_model
from rpnkit.modeling.presets import build_model, preset_config
from rpnkit.viz import overlays, report, show
from rpnkit.viz.figures import DPI, POSITIVE_COLOUR
from rpnkit.viz.overlays import POSITIVES_OUTLINED, place_labels

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
RACCOON = DATA / "raccoon"
PHOTO = RACCOON / "images" / "raccoon-1.jpg"
SIZE = {"short": 96, "max_size": 144}


def _drawn(fig):
    """``fig`` drawn on a canvas of its own (save_figure closed it) and its renderer."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


# 1. crowded detections: labels inside the image, none over another


def test_labels_go_above_else_inside_else_below_and_never_overlap():
    size = np.array([[30.0, 10.0]])
    boxes = np.array(
        [
            [10.0, 50, 60, 90],  # room above its top-left corner
            [12.0, 50, 60, 90],  # above is taken: inside its top
            [14.0, 50, 60, 90],  # above and inside taken: below its bottom
            [16.0, 50, 60, 90],  # then inside its bottom
            [18.0, 50, 60, 90],  # all four taken: no label
            [10.0, 0, 50, 40],  # at the image's top: inside, not cut off
            [90.0, 20, 100, 30],  # at its right edge: moved left into the image
            [95.0, 95, 110, 110],  # past its right and bottom: moved in
        ]
    )
    spots = place_labels(boxes, size.repeat(len(boxes), 0), 100, 100)
    assert spots == [
        (10, 40),
        (12, 50),
        (14, 90),
        (16, 80),
        None,
        (10, 0),
        (70, 10),
        (70, 85),
    ]


def test_crowded_detections_keep_their_labels_inside_the_image_and_apart(tmp_path, monkeypatch):
    # labels once overlapped each other and were cut off at the image's border
    figures = saved_figures(monkeypatch)
    corner = torch.tensor([[200.0, 0, 320, 60]])  # at the top-right corner
    boxes = torch.cat([corner.repeat(6, 1), torch.tensor([[20.0, 100, 60, 140]])])
    scores = torch.tensor([0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.4])
    names = ["a long class name"] * 6 + ["cat"]
    image = torch.rand(3, 240, 320)
    assert overlays.plot_detections(image, boxes, scores, names, tmp_path / "d.png") == 7
    (fig,) = figures
    (ax,) = fig.axes
    renderer = _drawn(fig)
    frames = [t.get_bbox_patch().get_window_extent(renderer) for t in ax.texts]
    image_frame = ax.images[0].get_window_extent(renderer)
    for i, frame in enumerate(frames):
        assert image_frame.x0 - 1 <= frame.x0 and frame.x1 <= image_frame.x1 + 1
        assert image_frame.y0 - 1 <= frame.y0 and frame.y1 <= image_frame.y1 + 1
        assert all(_apart(frame, other) for other in frames[i + 1 :])
    texts = [t.get_text() for t in ax.texts]
    assert texts[0] == "a long class name 0.95" and "cat 0.40" in texts  # the best first
    assert len(texts) < 7  # the corner has room for a few of its six labels
    assert (
        ax.get_title() == f"7 detections; labels on {len(texts)}, the best first, none over another"
    )


def _apart(a, b) -> bool:
    """Whether display boxes ``a`` and ``b`` share at most an edge (``Bbox.overlaps`` counts
    one shared)."""
    eps = 1e-6
    return a.x1 <= b.x0 + eps or b.x1 <= a.x0 + eps or a.y1 <= b.y0 + eps or b.y1 <= a.y0 + eps


# 2. the report's gallery: pictures drawn at the size they are shown, and readable


def test_report_gallery_pictures_are_large_enough_to_read(tmp_path):
    items = [{"image": torch.zeros(3, 480, 640, dtype=torch.uint8), "file_name": f"{i}.jpg"}
             for i in range(2)]  # fmt: skip
    boxes = torch.tensor([[10.0, 10, 100, 100]])
    recall = SimpleNamespace(
        table=SimpleNamespace(recall_per_image=lambda k: torch.tensor([1.0, 0.0])),
        kept=[(boxes, boxes), (boxes, boxes)],
    )
    page = report._gallery_section(items, recall, 1, tmp_path)
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) == 2
    columns = int(re.search(r"\.gallery \{[^}]*repeat\((\d+), 1fr\)", report.STYLE).group(1))
    page_width = int(re.search(r"body \{[^}]*max-width: (\d+)px", report.STYLE).group(1))
    for data in pngs:
        with Image.open(io.BytesIO(base64.b64decode(data))) as png:
            width = png.size[0]
        shown = min(width, page_width / columns)  # a cell never enlarges its picture
        assert shown >= 500  # four a row of 400 px pictures showed them at 270
        assert width <= page_width / columns  # drawn no larger than shown: not blurred


# 3. show anchors: the position's mark hides none of the smallest anchors


def test_the_position_mark_is_drawn_under_the_anchors_and_smaller_than_they(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    anchors = torch.tensor([[56.0, 40, 72, 56], [60, 44, 68, 52], [24, 8, 104, 88]])
    levels = [("stride 4", 2), ("stride 16", 1)]
    overlays.plot_anchors_at_position(torch.rand(3, 96, 128), anchors, tmp_path / "a.png",
                                      levels=levels)  # fmt: skip
    (fig,) = figures
    (ax,) = fig.axes
    (mark,) = ax.lines
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(boxes) == 3 and all(mark.get_zorder() < box.get_zorder() for box in boxes)
    _drawn(fig)
    smallest = min(box.get_window_extent().width for box in boxes)  # the 8 px anchor
    assert mark.get_markersize() * DPI / 72 < smallest


# 4. show labels: hundreds of positives are not a solid block


def test_many_positives_are_sampled_and_their_centres_all_dotted(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    g = torch.Generator().manual_seed(0)
    corners = torch.rand(197, 2, generator=g) * 80
    positive = torch.cat([corners, corners + 16], 1)
    box = torch.tensor([[10.0, 10, 50, 50]])
    drawn = overlays.plot_anchor_labels(
        torch.rand(3, 96, 128), box, positive, box.repeat(5, 1), box[:0], tmp_path / "l.png"
    )
    assert drawn == POSITIVES_OUTLINED + 5
    (fig,) = figures
    (ax,) = fig.axes
    yellow = to_rgb(POSITIVE_COLOUR)
    outlined = [p for p in ax.patches if to_rgb(p.get_edgecolor()) == yellow]
    assert len(outlined) == POSITIVES_OUTLINED < 197
    (dots,) = ax.lines
    centres = (positive[:, :2] + positive[:, 2:]) / 2
    np.testing.assert_allclose(np.stack(dots.get_data(), 1), centres.numpy())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == f"positive (197, {POSITIVES_OUTLINED} drawn, all dotted)"
    # a few positives: all outlined, no dots, the legend as before
    plot = overlays.plot_anchor_labels
    assert plot(torch.rand(3, 96, 128), box, box.repeat(3, 1), box, box, tmp_path / "m.png") == 5
    assert not figures[1].axes[0].lines
    assert figures[1].axes[0].get_legend().get_texts()[0].get_text() == "positive (3)"


# 5. the pictures of the resized image say the network's input size


TEST_IMAGE = {"split_file": RACCOON / "test_labels.csv", "index": 1}  # raccoon's, with a box


def _input_size(source, **image) -> str:
    """``input WxH``: the image resized to SIZE, as show resizes it."""
    h, w = show._item(source, **image, **SIZE)["image"].shape[1:]
    return f"input {w}x{h}"


def test_anchor_grid_and_label_titles_say_the_input_size(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    config = preset_config("tiny")
    wanted = _input_size(PHOTO)
    show.show_anchors(config, PHOTO, tmp_path / "a.png", **SIZE)
    assert figures[-1].axes[0].get_title().endswith(f"), every level; {wanted}")
    show.show_grid(config, PHOTO, tmp_path / "g.png", level=0, **SIZE)
    assert f"positions, {wanted}" in figures[-1].axes[0].get_title()
    show.show_labels(config, RACCOON, tmp_path / "l.png", **TEST_IMAGE, **SIZE)
    wanted = _input_size(RACCOON, **TEST_IMAGE)
    assert figures[-1].axes[0].get_title().endswith(f"as the matcher labels them; {wanted}")


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> Path:
    """The tiny preset with its initial weights."""
    torch.manual_seed(0)
    config = preset_config("tiny")
    path = tmp_path_factory.mktemp("random") / "tiny.safetensors"
    return save_model(path, build_model(config).eval(), ModelSpec("rpn", config))


def test_model_pictures_say_the_input_size(random_checkpoint, tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    wanted = _input_size(PHOTO)
    options = {"device": "cpu", **SIZE}
    show.show_objectness(random_checkpoint, PHOTO, tmp_path / "o.png", **options)
    assert figures[-1].axes[0].get_title() == wanted
    show.show_nms(random_checkpoint, PHOTO, tmp_path / "n.png", top=5, **options)
    assert figures[-1].axes[0].get_title() == f"before NMS: the top 5 boxes; {wanted}"
    show.show_proposals(random_checkpoint, RACCOON, tmp_path / "p.png", **TEST_IMAGE, **options)
    title = figures[-1].axes[0].get_title()
    wanted = _input_size(RACCOON, **TEST_IMAGE)
    assert title.startswith("top 10 drawn; GT found in top 100: ") and title.endswith(wanted)
