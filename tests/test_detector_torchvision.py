"""The whole detector against torchvision's FasterRCNN on the same weights and images:
normalisation and padding, anchors, RPN, RoI pooling, box head and post-processing together."""

import torch
from conftest import tiny_detector_pair

from rpnkit.data import SyntheticShapes
from rpnkit.testing import detection_rows


def test_detections_equal_torchvision_faster_rcnn():
    ours, theirs = tiny_detector_pair()

    shapes = SyntheticShapes(2, seed=3)
    images_u8 = [shapes[0]["image"], shapes[1]["image"][:, :224, :]]  # 256x256 and 224x256
    crops = [c.float() / 255 for c in images_u8]  # torchvision takes floats in [0, 1]
    images = torch.zeros(2, 3, 256, 256)
    for i, c in enumerate(crops):
        images[i, :, : c.shape[1], : c.shape[2]] = c
    sizes = torch.tensor([[256, 256], [224, 256]])
    with torch.no_grad():
        out = ours(images, sizes)
        ref = theirs(crops)
    for (boxes, scores, labels), r in zip(out.detections.per_image(), ref):
        assert len(boxes) == len(r["boxes"]) > 10
        a = detection_rows(boxes, scores, labels)
        b = detection_rows(r["boxes"], r["scores"], r["labels"])
        assert torch.equal(a[:, 5], b[:, 5])
        assert torch.allclose(a[:, 4], b[:, 4], atol=1e-5)
        assert torch.allclose(a[:, :4], b[:, :4], atol=1e-3)
