"""A backbone and an RPN behind one forward: images in, proposals (and losses) out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .cascade_rpn import CascadeRPN
from .freezing import Freezable
from .rpn import ProposalConfig, RegionProposalNetwork, RPNOutput
from .structures import GroundTruth


def normalize(images: Tensor, image_sizes: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(B, 3, H, W) uint8, or float in [0, 1] -> (x - mean) / std inside each image and exactly
    0 in the padding (torchvision's, detectron2's and mmdetection's convention: pad after
    normalising). Batches travel as uint8 (a quarter of float32's bytes) and become float
    here, on the model's device."""
    if images.dtype == torch.uint8:
        images = images.float() / 255
    h, w = images.shape[-2:]
    sizes = image_sizes.to(images.device)
    rows = torch.arange(h, device=images.device)[None, :] < sizes[:, :1]  # (B, H)
    cols = torch.arange(w, device=images.device)[None, :] < sizes[:, 1:]  # (B, W)
    inside = (rows[:, :, None] & cols[:, None, :])[:, None]  # (B, 1, H, W)
    return ((images - mean) / std) * inside


def check_images(images: Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (B, 3, H, W) batch, got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("empty batch: no images were given")


class ProposalModel(Freezable):
    """Normalises a padded (B, 3, H, W) batch of RGB images (uint8, or float in [0, 1]), runs
    the backbone and the RPN (a ``RegionProposalNetwork`` or a ``CascadeRPN``, called alike).
    ``image_sizes`` (B, 2) gives each image's true (height, width) inside the padding.
    The first stage of ``FasterRCNN`` is one of these."""

    def __init__(
        self,
        *,
        backbone: nn.Module,
        rpn: RegionProposalNetwork | CascadeRPN,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
    ) -> None:
        super().__init__()
        strides = tuple(backbone.strides)
        if strides != tuple(rpn.config.anchors.strides):
            raise ValueError(
                f"the backbone's feature strides {strides} differ from the anchor strides "
                f"{tuple(rpn.config.anchors.strides)}: give the anchor config one level per "
                f"backbone level, with the same strides"
            )
        if backbone.out_channels != rpn.head.in_channels:
            raise ValueError(
                f"the backbone gives {backbone.out_channels} channels but the RPN head expects "
                f"{rpn.head.in_channels}"
            )
        self.backbone = backbone
        self.rpn = rpn
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), False)
        self.channels_last = False

    def use_channels_last(self, enabled: bool = True) -> ProposalModel:
        """Run the convolutions (backbone and RPN head) in channels-last memory format (NHWC):
        the same function, faster convolutions on GPUs' tensor cores (depthwise ones most;
        ``engine.device.memory_layout_for`` applies it on CUDA when asked)."""
        self.channels_last = enabled
        memory_format = torch.channels_last if enabled else torch.contiguous_format
        self.to(memory_format=memory_format)
        return self

    def features(self, images: Tensor, image_sizes: Tensor) -> list[Tensor]:
        """The backbone's [(B, C, H_l, W_l)] maps of the normalised batch."""
        check_images(images)
        x = normalize(images, image_sizes, self.pixel_mean, self.pixel_std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    def forward(
        self,
        images: Tensor,
        image_sizes: Tensor,
        targets: GroundTruth | None = None,
        *,
        image_scales: Tensor | None = None,
        proposal_config: ProposalConfig | None = None,
    ) -> RPNOutput:
        """``proposal_config`` overrides the RPN's own setting for this call (the alternating
        schedule proposes for training images with the training top-n, in inference mode)."""
        return self.rpn(
            self.features(images, image_sizes),
            image_sizes,
            targets,
            image_scales=image_scales,
            proposal_config=proposal_config,
        )
