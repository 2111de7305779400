import torch
from PIL import Image

from rpnkit.visualize import plot_anchors_at_position, plot_proposals_vs_gt, plot_sampled_anchors


def _image():
    return torch.rand(3, 96, 128)


def test_anchor_picture_is_a_png_of_the_requested_size(tmp_path):
    anchors = torch.tensor([[10.0, 10, 50, 50], [0, 20, 60, 40], [20, 0, 40, 60]])
    n = plot_anchors_at_position(_image(), anchors, tmp_path / "a.png", size_px=(400, 300))
    assert n == 3
    with Image.open(tmp_path / "a.png") as img:
        assert img.format == "PNG" and img.size == (400, 300)


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
