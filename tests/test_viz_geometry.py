"""Where the pictures put an image's pixels: on the boxes' edge coordinates (pixel j spans
[j, j + 1), so a box (0, 0, w, h) lies on the image's border), and thick enough to see when
the image is a strip (a 512 x 6 network input, a 1 px wide one). Also docs/deploy.md's image
reader, which must give the pixels rpnkit reads (16-bit PNGs, EXIF-rotated photos)."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import saved_figures
from matplotlib import pyplot as plt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import Rectangle
from PIL import Image

from rpnkit.data.images import load_rgb
from rpnkit.engine.checkpoint import ModelSpec, save_model
from rpnkit.modeling.presets import build_model, preset_config
from rpnkit.viz import overlays, show
from rpnkit.viz.figures import MAX_SHOWN_ASPECT, image_figure, image_panel

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _frames(fig, ax):
    """The window extents (PNG pixels) of ``ax``'s image and of its box patches, drawn."""
    canvas = FigureCanvasAgg(fig)  # save_figure closed it: pyplot took its canvas away
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [p.get_window_extent(renderer) for p in ax.patches if isinstance(p, Rectangle)]
    return ax.images[0].get_window_extent(renderer), boxes


def _checkerboard(size: int = 8) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[(np.indices((size, size)).sum(0) % 2) == 0] = 255
    return image


# 1. edge coordinates: pixel j covers [j, j + 1), as the boxes' corners say


def test_the_image_is_drawn_over_its_edge_coordinates():
    # imshow's default put pixel j over [j - 0.5, j + 0.5]: half a pixel off the boxes
    fig, (ax,) = image_figure((200, 200))
    image_panel(ax, _checkerboard(), "8x8")
    assert tuple(ax.images[0].get_extent()) == (0, 8, 8, 0)
    assert ax.get_xlim() == (0, 8) and ax.get_ylim() == (8, 0)
    plt.close(fig)


def test_the_anchor_pictures_margin_is_kept_around_the_image():
    fig, (ax,) = image_figure((200, 200))
    image_panel(ax, _checkerboard(), "8x8", margin=overlays.ANCHOR_MARGIN)
    assert tuple(ax.images[0].get_extent()) == (0, 8, 8, 0)
    assert ax.get_xlim() == (-2, 10) and ax.get_ylim() == (10, -2)  # a quarter on each side
    plt.close(fig)


def test_a_whole_image_box_lies_on_the_image_border(tmp_path, monkeypatch):
    # an 8x8 image drawn 640 px wide: 80 PNG pixels an image pixel, the error was 40 of them
    figures = saved_figures(monkeypatch)
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [2.0, 2.0, 4.0, 4.0]])
    overlays.plot_detections(_checkerboard(), boxes, [0.9, 0.8], ["a", "b"], tmp_path / "d.png")
    (ax,) = figures[-1].axes
    image, (whole, inner) = _frames(figures[-1], ax)
    assert image.width == pytest.approx(640, abs=1)
    for side in ("x0", "y0", "x1", "y1"):
        assert getattr(whole, side) == pytest.approx(getattr(image, side), abs=1.5), side
    # pixels 2 and 3 of 8: a quarter of the image in from its top-left corner
    assert inner.x0 - image.x0 == pytest.approx(image.width / 4, abs=1.5)
    assert image.y1 - inner.y1 == pytest.approx(image.height / 4, abs=1.5)


def test_objectness_cells_are_drawn_over_edge_coordinates(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    maps = [torch.rand(4, 6), torch.rand(2, 3)]
    overlays.plot_objectness_maps(torch.rand(3, 16, 24), maps, tmp_path / "o.png")
    image, first, second, _ = figures[-1].axes
    assert tuple(image.images[0].get_extent()) == (0, 24, 16, 0)
    assert tuple(first.images[0].get_extent()) == (0, 6, 4, 0)
    assert tuple(second.images[0].get_extent()) == (0, 3, 2, 0)


# 2. strips: stretched to a readable thickness, the title saying so


def test_an_ordinary_image_is_drawn_at_its_own_aspect(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    overlays.plot_anchor_centres(torch.rand(3, 120, 400), torch.zeros(1, 2), tmp_path / "c.png")
    (ax,) = figures[-1].axes
    image, _ = _frames(figures[-1], ax)
    assert image.width / image.height == pytest.approx(400 / 120, rel=0.01)
    assert ax.get_title() == "anchor centres"


def test_a_strip_is_stretched_to_a_readable_thickness(tmp_path, monkeypatch):
    # a 512x6 network input in a 640 px panel: a 5 px band, its anchors run together
    figures = saved_figures(monkeypatch)
    panel = overlays.LabelPanel(
        "labels", torch.tensor([[0.0, 0.0, 32.0, 6.0]]), *[torch.zeros(0, 4)] * 2
    )
    overlays.plot_label_panels(
        torch.rand(3, 6, 512), torch.zeros(0, 4), [panel], tmp_path / "l.png"
    )
    (ax,) = figures[-1].axes
    image, _ = _frames(figures[-1], ax)
    # the view (the image and its margins) drawn MAX_SHOWN_ASPECT times as wide as high
    assert image.height == pytest.approx(image.width / MAX_SHOWN_ASPECT, rel=0.02)
    assert image.height >= 100
    assert re.search(r"input 512x6; drawn \d+x taller$", ax.get_title())


def test_a_one_pixel_wide_result_fills_its_fitted_picture(tmp_path, monkeypatch):
    # a 1x1000 image: a 32 px wide PNG whose image was drawn 1 px wide
    figures = saved_figures(monkeypatch)
    image = np.full((1000, 1, 3), 200, np.uint8)
    boxes = torch.tensor([[0.0, 100.0, 1.0, 200.0]])
    overlays.plot_proposals(image, boxes, torch.tensor([0.5]), tmp_path / "p.png")
    (ax,) = figures[-1].axes
    drawn, (box,) = _frames(figures[-1], ax)
    assert drawn.width == pytest.approx(32, abs=1)
    assert (box.x0, box.x1) == (pytest.approx(drawn.x0, abs=1.5), pytest.approx(drawn.x1, abs=1.5))
    assert ax.get_title().endswith("; drawn 32x wider")


def _strips(tmp_path: Path) -> Path:
    """A CSV dataset of a 4000x50 strip with a box, and a 1x1000 strip."""
    images = tmp_path / "strips" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 4000, 3), dtype=np.uint8)).save(images / "wide.png")
    Image.fromarray(rng.integers(0, 256, (1000, 1, 3), dtype=np.uint8)).save(images / "tall.png")
    rows = ["image_path,xmin,ymin,xmax,ymax,label", "images/wide.png,1000,5,1300,45,obj"]
    (tmp_path / "strips" / "boxes.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "strips"


def test_show_labels_on_a_wide_strip_is_thick_enough_to_read(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    data = _strips(tmp_path)
    size = {"short": 256, "max_size": 512}  # the strip's input: 512x6
    show.show_labels(preset_config("tiny"), data, tmp_path / "l.png", **size)
    (ax,) = figures[-1].axes
    image, _ = _frames(figures[-1], ax)
    assert image.height == pytest.approx(image.width / MAX_SHOWN_ASPECT, rel=0.02)
    assert image.height >= 100  # 6 px of 512 in 640: 5 px before
    assert "input 512x6; drawn" in ax.get_title()


def test_show_objectness_on_a_tall_strip_shows_its_input(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    data = _strips(tmp_path)
    torch.manual_seed(0)
    config = preset_config("tiny")
    checkpoint = save_model(
        tmp_path / "tiny.safetensors", build_model(config).eval(), ModelSpec("rpn", config)
    )
    size = {"short": 256, "max_size": 512, "device": "cpu"}  # the strip's input: 1x512
    show.show_objectness(checkpoint, data / "images" / "tall.png", tmp_path / "o.png", **size)
    fig = figures[-1]
    for ax in fig.axes[:-1]:  # the input, then each level's map (the colour key last)
        drawn, _ = _frames(fig, ax)
        assert drawn.width >= drawn.height / MAX_SHOWN_ASPECT - 1, ax.get_title()
    assert fig.axes[0].get_title().startswith("input 1x512; drawn ")


# 3. docs/deploy.md reads images as rpnkit does


def _deploy_reader():
    """``read_rgb`` as docs/deploy.md's ONNX Runtime snippet defines it."""
    text = (DOCS / "deploy.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    snippet = next(b for b in blocks if "onnxruntime" in b)
    head = snippet[: snippet.index("session = ")]  # the imports and the reader, no model
    namespace = {}
    exec(head.replace("import onnxruntime as ort\n", ""), namespace)
    return namespace["read_rgb"]


def test_the_deploy_snippet_reads_16_bit_and_exif_rotated_images_as_rpnkit(tmp_path):
    # Image.open(path).convert("RGB") turned a 16-bit PNG white and ignored the EXIF rotation
    read_rgb = _deploy_reader()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 65536, (20, 30), dtype=np.uint16)).save(tmp_path / "g16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turned 90 degrees, displayed 20 wide and 30 high
    photo = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    photo.save(tmp_path / "turned.jpg", exif=exif)
    for name in ("g16.png", "turned.jpg"):
        pixels, wanted = read_rgb(tmp_path / name), load_rgb(tmp_path / name)
        assert pixels.dtype == np.uint8 and pixels.shape == wanted.shape, name
        assert (pixels == wanted).all(), name
    assert read_rgb(tmp_path / "turned.jpg").shape == (30, 20, 3)
    assert 0 < read_rgb(tmp_path / "g16.png").mean() < 250  # not white
