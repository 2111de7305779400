"""torchvision's Faster R-CNN behind rpnkit's model interface, for benchmarks only.

``rpnkit.testing.torchvision_faster_rcnn(ours)`` returns torchvision's own ``FasterRCNN`` (its
transform, RPN, RoIHeads and postprocessing) around a copy of rpnkit's backbone, with the same
anchors and settings and the RPN head and box head weights copied from rpnkit's model. Both then
compute the same function; what differs is how.

``TorchvisionDetector`` puts that model behind rpnkit's interface (padded batch, GroundTruth,
an output with ``.losses`` and ``.detections``), so that the same training loop and evaluation
run both. It turns torchvision's resizing off: the images come resized by rpnkit's dataset.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from rpnkit.modeling.roi_heads import Detections
from rpnkit.testing import torchvision_faster_rcnn


class TorchvisionDetector(nn.Module):
    """torchvision's FasterRCNN behind rpnkit's model interface (reference only)."""

    def __init__(self, ours) -> None:
        super().__init__()
        self.model = torchvision_faster_rcnn(ours)
        self.model.transform.resize = lambda image, target=None: (image, target)  # pre-resized

    @property
    def roi_heads(self):  # rpnkit's loop names the loss terms by this
        return self.model.roi_heads

    def forward(self, images, image_sizes, targets=None, *, image_scales=None):
        if images.dtype == torch.uint8:  # rpnkit's batches are uint8; torchvision takes [0, 1]
            images = images.float() / 255
        sizes = image_sizes.tolist()
        crops = [img[:, :h, :w] for img, (h, w) in zip(images, sizes)]
        if self.training and targets is not None:
            keep = targets.mask & ~targets.ignore  # torchvision has no ignore regions
            tv_targets = [
                {"boxes": targets.boxes[i][keep[i]], "labels": targets.labels[i][keep[i]]}
                for i in range(len(keep))
            ]
            losses = self.model(crops, tv_targets)
            renamed = {
                "loss_objectness": losses["loss_objectness"],
                "loss_rpn_box": losses["loss_rpn_box_reg"],
                "loss_classifier": losses["loss_classifier"],
                "loss_box_reg": losses["loss_box_reg"],
            }
            return SimpleNamespace(losses=renamed, detections=None, proposals=None)
        found = self.model(crops)
        d = max(1, max(len(f["boxes"]) for f in found))
        boxes = images.new_zeros((len(found), d, 4))
        scores = images.new_zeros((len(found), d))
        labels = torch.zeros((len(found), d), dtype=torch.int64, device=images.device)
        for i, f in enumerate(found):  # reference model: a loop is fine here
            n = len(f["boxes"])
            boxes[i, :n], scores[i, :n], labels[i, :n] = f["boxes"], f["scores"], f["labels"]
        num = torch.tensor([len(f["boxes"]) for f in found], device=images.device)
        return SimpleNamespace(
            losses={}, detections=Detections(boxes, scores, labels, num), proposals=None
        )
