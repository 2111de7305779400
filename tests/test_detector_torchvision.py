"""The whole detector against torchvision's FasterRCNN on the same weights and images:
normalisation and padding, anchors, RPN, RoI pooling, box head and post-processing together."""

import dataclasses

import torch

from rpnkit.data import SyntheticShapes
from rpnkit.detector import DetectorConfig, FasterRCNN
from rpnkit.presets import preset_config
from rpnkit.roi_heads import RoIHeadConfig
from rpnkit.testing import torchvision_faster_rcnn


def _rows(boxes, scores, labels):
    """(N, 6) rows [x1, y1, x2, y2, score, label] in a canonical order (ties in any order)."""
    rows = torch.cat([boxes.double(), scores[:, None].double(), labels[:, None].double()], 1)
    for col in (5, 3, 2, 1, 0):
        rows = rows[rows[:, col].sort(stable=True).indices]
    return rows


def test_detections_equal_torchvision_faster_rcnn():
    torch.manual_seed(0)
    model = preset_config("tiny")
    anchors = dataclasses.replace(model.rpn.anchors, round_base=True)  # as torchvision's
    model = dataclasses.replace(model, rpn=dataclasses.replace(model.rpn, anchors=anchors))
    ours = FasterRCNN(
        DetectorConfig(
            model=model,
            roi=RoIHeadConfig(num_classes=5, representation_size=64),
            pooled_levels=3,
        )
    ).eval()
    with torch.no_grad():  # spread the class scores so that many pass the 0.05 threshold
        torch.nn.init.normal_(ours.roi_heads.box_head.cls_score.weight, std=0.3)
    theirs = torchvision_faster_rcnn(ours, min_size=256, max_size=256).eval()

    shapes = SyntheticShapes(2, seed=3)
    crops = [shapes[0]["image"], shapes[1]["image"][:, :224, :]]  # 256x256 and 224x256
    images = torch.zeros(2, 3, 256, 256)
    for i, c in enumerate(crops):
        images[i, :, : c.shape[1], : c.shape[2]] = c
    sizes = torch.tensor([[256, 256], [224, 256]])
    with torch.no_grad():
        out = ours(images, sizes)
        ref = theirs(crops)
    for (boxes, scores, labels), r in zip(out.detections.per_image(), ref):
        assert len(boxes) == len(r["boxes"]) > 10
        a = _rows(boxes, scores, labels)
        b = _rows(r["boxes"], r["scores"], r["labels"])
        assert torch.equal(a[:, 5], b[:, 5])
        assert torch.allclose(a[:, 4], b[:, 4], atol=1e-5)
        assert torch.allclose(a[:, :4], b[:, :4], atol=1e-3)
