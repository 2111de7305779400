import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.ops import box_convert
from torchvision.ops import box_iou as tv_box_iou

from rpnkit.modeling.boxes import (
    BBOX_XFORM_CLIP,
    BoxCoder,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xywh_to_xyxy,
    box_xyxy_to_cxcywh,
    box_xyxy_to_xywh,
    describe_bad_gt_box,
    generalized_iou_loss,
    iou_loss,
)


def random_boxes(n: int, seed: int = 0, scale: float = 500.0, min_size: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale
    wh = torch.rand(n, 2, generator=g) * scale / 2 + min_size
    return torch.cat([xy, xy + wh], dim=1)


def test_iou_hand_checked():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    # identical; half overlap: 50 / (100 + 100 - 50); disjoint
    assert torch.allclose(box_iou(a, b), torch.tensor([[1.0, 50.0 / 150.0, 0.0]]))


def test_iou_equals_torchvision_exactly():
    # Same formula, same float32 operation order: bitwise equal.
    a, b = random_boxes(50, 1), random_boxes(70, 2)
    assert torch.equal(box_iou(a, b), tv_box_iou(a, b))


def test_iou_broadcasts_over_batch():
    a, b = random_boxes(12, 3).view(3, 4, 4), random_boxes(15, 4).view(3, 5, 4)
    batched = box_iou(a, b)
    for i in range(3):
        assert torch.equal(batched[i], box_iou(a[i], b[i]))


def test_conversions_round_trip_and_match_torchvision():
    boxes = random_boxes(40, 5)
    assert torch.allclose(box_xywh_to_xyxy(box_xyxy_to_xywh(boxes)), boxes, atol=1e-4)
    assert torch.allclose(box_cxcywh_to_xyxy(box_xyxy_to_cxcywh(boxes)), boxes, atol=1e-4)
    assert torch.allclose(box_xyxy_to_xywh(boxes), box_convert(boxes, "xyxy", "xywh"))
    assert torch.allclose(box_xyxy_to_cxcywh(boxes), box_convert(boxes, "xyxy", "cxcywh"))


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_coder_equals_torchvision(weights):
    # Equal to float32 rounding: the formulas are the same but torchvision orders a few
    # multiplications differently, so allow a relative error of 1e-6.
    gt, anchors = random_boxes(300, 6), random_boxes(300, 7)
    ours, theirs = BoxCoder(weights), TVBoxCoder(weights)
    assert torch.allclose(ours.encode(gt, anchors), theirs.encode_single(gt, anchors), rtol=1e-6)
    deltas = torch.randn(300, 4) * 2
    decoded_tv = theirs.decode_single(deltas, anchors)
    assert torch.allclose(ours.decode(deltas, anchors), decoded_tv, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_decode_inverts_encode(weights):
    coder = BoxCoder(weights)
    # sizes within a factor 1000/16 of each other, so the log-scale clamp never bites
    gt, anchors = random_boxes(200, 8, min_size=20), random_boxes(200, 9, min_size=20)
    assert torch.allclose(coder.decode(coder.encode(gt, anchors), anchors), gt, atol=1e-3)


def test_decode_clamps_log_scale():
    coder = BoxCoder()
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    box = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), anchor)
    # width is clamped at 16 * exp(log(1000/16)) = 1000
    assert math.isclose(float(box[0, 2] - box[0, 0]), 16 * math.exp(BBOX_XFORM_CLIP), rel_tol=1e-5)
    assert torch.isfinite(box).all()


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ([50.0, 10.0, 40.0, 30.0], "inverted"),
        ([float("nan"), 10.0, 40.0, 30.0], "NaN"),
        ([10.0, 10.0, float("inf"), 30.0], "NaN or infinite"),
        ([300.0, 300.0, 400.0, 400.0], "outside"),
        ([10.0, 10.0, 10.0, 30.0], "empty"),
    ],
)
def test_bad_box_message_names_image_box_and_reason(box, reason):
    boxes = torch.zeros(2, 3, 4)
    boxes[:, :, 2:] = 20
    boxes[1, 2] = torch.tensor(box)
    mask = torch.ones(2, 3, dtype=torch.bool)
    message = describe_bad_gt_box(boxes, mask, torch.tensor([[100, 100], [100, 100]]))
    assert message is not None
    assert message.startswith("image 1: ground-truth box 2")
    assert reason in message


def test_padding_is_not_checked():
    boxes = torch.zeros(1, 2, 4)  # padded slots are all-zero boxes
    boxes[0, 0] = torch.tensor([1.0, 1.0, 5.0, 5.0])
    mask = torch.tensor([[True, False]])
    assert describe_bad_gt_box(boxes, mask, torch.tensor([[10, 10]])) is None


def _graph_nodes(tensor: torch.Tensor) -> set[str]:
    seen, stack, names = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return names


@pytest.mark.parametrize("loss", [iou_loss, generalized_iou_loss])
def test_iou_losses_hand_checked_and_backward_without_prod(loss):
    # (0, 0, 2, 2) against (1, 1, 3, 3): intersection 1, union 7, IoU 1/7; hull 9, GIoU
    # 1/7 - 2/9. Disjoint boxes give zero intersections, the case where prod's backward
    # takes its slow path after counting zeros on the host (a GPU->CPU sync): the graph
    # must not hold a ProdBackward.
    pred = torch.tensor([[0.0, 0, 2, 2], [0, 0, 1, 1]], requires_grad=True)
    gt = torch.tensor([[1.0, 1, 3, 3], [5, 5, 6, 6]])
    value = loss(pred, gt)
    expected = 1 - 1 / 7 if loss is iou_loss else 1 - 1 / 7 + 2 / 9
    assert value[0].item() == pytest.approx(expected)
    assert value[1].item() == pytest.approx(1.0 if loss is iou_loss else 1 + (36 - 2) / 36)
    assert not any("Prod" in name for name in _graph_nodes(value.sum()))
    value.sum().backward()
    assert torch.isfinite(pred.grad).all()
