"""The Region Proposal Network: head, anchor labelling, losses and batched proposal selection.

Shape glossary:
    B       : images in the batch (padded to one size)
    L       : feature levels
    A_l     : anchors per position on level l;  A_total: anchors of an image over all levels
    K_obj   : objectness channels per anchor: 1 (sigmoid) or 2 (the paper's 2-class softmax)
    N_pre   : proposals kept per level before NMS;  K : proposals kept per image after NMS
    P, S    : positive and total sample slots per image

Every prediction is flattened in the anchors' order (see ``anchors.py``): level, row, column,
anchor. Proposals come out padded: (B, K, 4) xyxy boxes, (B, K) scores and (B,) counts, the
valid entries first and sorted by decreasing score.

Objectness comes in two modes (``RPNConfig.objectness_mode``). ``"classification"``: the
logit of "this anchor is a foreground object", trained by binary cross-entropy on sampled
positives and negatives. ``"localization"`` (OLN, Kim et al., RA-L 2022): the logit of how
well the anchor's centre sits inside its matched GT box (FCOS centerness), trained by an L1
loss on the sigmoid: positives (IoU >= 0.3) regress their centerness, no fraction of negatives
is asked for, and the slots that positives leave free hold anchors far from every box (IoU <
0.1) with target 0, as OLN's code samples them. No anchor is trained to call an object of
another class background, so the RPN proposes objects of classes it never saw. Proposals are
scored by the sigmoid in both modes: the same selection path.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_choices, check_ranges
from .anchors import AnchorConfig, AnchorGenerator, visible_anchors
from .boxes import BoxCoder, clip_boxes, generalized_iou_loss, iou_loss
from .matching import BalancedSampler, Matcher, MatchResult, SampledAnchors
from .nms import nms_keep
from .structures import GroundTruth


def _check_box_coder_weights(config) -> None:
    weights = config.box_coder_weights
    if len(weights) != 4 or not all(isinstance(w, (int, float)) and w > 0 for w in weights):
        raise ValueError(
            f"{type(config).__name__}.box_coder_weights must be 4 numbers > 0 (wx, wy, ww, wh), "
            f"got {weights!r}"
        )


@dataclass(frozen=True)
class ProposalConfig:
    """Proposal selection. ``pre_nms_top_n`` counts per level, ``post_nms_top_n`` per image.

    ``min_size`` is in input pixels (multiplied by ``image_scales`` when those are given, so the
    paper's 16 px in original-image scale is ``min_size=16`` with the resize factors passed in).
    """

    pre_nms_top_n: int = 1000
    post_nms_top_n: int = 1000
    nms_threshold: float = 0.7
    nms_per_level: bool = True
    min_size: float = 1e-3
    score_threshold: float = 0.0

    def __post_init__(self) -> None:
        check_ranges(self, ("pre_nms_top_n", "post_nms_top_n"), low=1, integer=True)
        check_ranges(self, ("nms_threshold",), low=0, high=1, low_open=True)
        check_ranges(self, ("min_size",), low=0)
        check_ranges(self, ("score_threshold",), low=0, high=1)


@dataclass(frozen=True)
class LocalizationConfig:
    """OLN's objectness training (``RPNConfig.objectness_mode="localization"``): anchors whose
    best IoU with a GT box is >= ``iou_threshold`` are positives (no low-quality matches) and
    regress their centerness; up to ``batch_size_per_image`` are sampled per image, positives
    first (no positive fraction), the rest filled with anchors whose best IoU is below
    ``background_iou``, which regress 0 (OLN's objectness sampler: mmdetection's RandomSampler
    with ``pos_fraction=1`` fills the free slots with its assigner's negatives, IoU < 0.1).
    The L1 loss between the sigmoid and the target is averaged over the sampled anchors and
    weighted by ``loss_weight``. ``initial_score``: the score every anchor starts with (the
    objectness bias is set to its logit); 0.5 (bias 0) is OLN's."""

    iou_threshold: float = 0.3
    background_iou: float = 0.1
    batch_size_per_image: int = 256
    loss_weight: float = 1.0
    initial_score: float = 0.5

    def __post_init__(self) -> None:
        check_ranges(self, ("iou_threshold",), low=0, high=1, low_open=True)
        check_ranges(self, ("background_iou",), low=0, high=1)
        if self.background_iou > self.iou_threshold:
            raise ValueError(
                "LocalizationConfig.background_iou must be at most iou_threshold, got "
                f"{self.background_iou!r} > {self.iou_threshold!r}"
            )
        check_ranges(self, ("batch_size_per_image",), low=1, integer=True)
        check_ranges(self, ("loss_weight",), low=0)
        if not 0 < self.initial_score < 1:
            raise ValueError(
                f"LocalizationConfig.initial_score must be in (0, 1), got {self.initial_score!r}"
            )


@dataclass(frozen=True)
class RPNConfig:
    """Everything that defines an RPN besides the backbone.

    ``objectness`` is the head's form (one sigmoid logit, or the paper's 2-class softmax);
    ``objectness_mode`` what it learns: foreground classification, or OLN's localization
    quality (sigmoid only; trained as ``localization`` says, box regression unchanged)."""

    anchors: AnchorConfig = field(default_factory=AnchorConfig.pyramid)
    objectness: Literal["sigmoid", "softmax"] = "sigmoid"
    objectness_mode: Literal["classification", "localization"] = "classification"
    localization: LocalizationConfig = field(default_factory=LocalizationConfig)
    fg_iou_threshold: float = 0.7
    bg_iou_threshold: float = 0.3
    allow_low_quality_matches: bool = True
    crowd_ioa_threshold: float = 0.5
    allowed_border: float | None = None
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    loss_form: Literal["modern", "paper"] = "modern"
    box_loss: Literal["smooth_l1", "l1", "giou", "iou"] = "smooth_l1"
    smooth_l1_beta: float = 1.0 / 9
    box_loss_weight: float | None = None  # lambda; None: 1 (modern) or 10 (paper)
    box_coder_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    train_proposals: ProposalConfig = field(
        default_factory=lambda: ProposalConfig(pre_nms_top_n=2000, post_nms_top_n=2000)
    )
    test_proposals: ProposalConfig = field(
        default_factory=lambda: ProposalConfig(pre_nms_top_n=1000, post_nms_top_n=1000)
    )
    match_chunk_elements: int = 1 << 22

    def proposals(self, training: bool) -> ProposalConfig:
        """The proposal setting of a training or an inference forward."""
        return self.train_proposals if training else self.test_proposals

    def __post_init__(self) -> None:
        thresholds = ("fg_iou_threshold", "bg_iou_threshold", "crowd_ioa_threshold")
        check_ranges(self, thresholds, low=0, high=1)
        if self.bg_iou_threshold > self.fg_iou_threshold:
            raise ValueError(
                f"RPNConfig.bg_iou_threshold must be <= fg_iou_threshold "
                f"({self.fg_iou_threshold}), got {self.bg_iou_threshold}"
            )
        check_ranges(self, ("allowed_border", "box_loss_weight"), low=0, optional=True)
        check_ranges(self, ("batch_size_per_image", "match_chunk_elements"), low=1, integer=True)
        check_ranges(self, ("positive_fraction",), low=0, high=1, low_open=True)
        check_ranges(self, ("smooth_l1_beta",), low=0)
        _check_box_coder_weights(self)
        check_choices(
            self,
            {
                "objectness": ("sigmoid", "softmax"),
                "objectness_mode": ("classification", "localization"),
                "loss_form": ("modern", "paper"),
                "box_loss": ("smooth_l1", "l1", "giou", "iou"),
            },
        )
        if self.objectness_mode == "localization" and self.objectness != "sigmoid":
            raise ValueError(
                "RPNConfig.objectness_mode='localization' regresses one score per anchor: it "
                f"needs objectness='sigmoid', got {self.objectness!r}"
            )

    @classmethod
    def paper(cls, **overrides) -> RPNConfig:
        """The Faster R-CNN paper's single-level RPN (VGG-16 conv5_3)."""
        settings = dict(
            anchors=AnchorConfig.single_level(offset=0.5),
            objectness="softmax",
            allowed_border=0.0,
            loss_form="paper",
            train_proposals=ProposalConfig(
                pre_nms_top_n=12000, post_nms_top_n=2000, nms_per_level=False, min_size=16
            ),
            test_proposals=ProposalConfig(
                pre_nms_top_n=6000, post_nms_top_n=300, nms_per_level=False, min_size=16
            ),
        )
        settings.update(overrides)
        return cls(**settings)


@dataclass(frozen=True)
class Proposals:
    """Padded proposals: ``boxes`` (B, K, 4) xyxy, ``scores`` (B, K) objectness probabilities
    (predicted centerness in localization mode), ``levels`` (B, K) feature level of each,
    ``num`` (B,) valid count. Padding is zeros."""

    boxes: Tensor
    scores: Tensor
    levels: Tensor
    num: Tensor

    @property
    def valid(self) -> Tensor:
        """(B, K) bool: the valid prefix of each row."""
        slots = torch.arange(self.boxes.shape[1], device=self.boxes.device)
        return slots[None, :] < self.num[:, None]

    def per_image(self) -> list[tuple[Tensor, Tensor]]:
        """[(boxes (n_i, 4), scores (n_i,))] per image. Syncs: for output and tests only."""
        return [(self.boxes[i, :n], self.scores[i, :n]) for i, n in enumerate(self.num.tolist())]


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then sibling 1x1 convs for objectness and box deltas, shared by levels.

    Levels with different anchor counts get their own 1x1 convs behind the shared 3x3 conv.
    Objectness layout: sigmoid, (B, A, H, W); softmax, (B, 2 * A, H, W) with the A background
    logits first and the A foreground logits after (the paper's 18-channel map for A = 9).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_anchors_per_level: Sequence[int],
        objectness: Literal["sigmoid", "softmax"] = "sigmoid",
    ) -> None:
        super().__init__()
        if objectness not in ("sigmoid", "softmax"):
            raise ValueError(f"objectness must be 'sigmoid' or 'softmax', got {objectness!r}")
        self.in_channels = in_channels
        self.num_anchors_per_level = list(num_anchors_per_level)
        self.objectness = objectness
        self.cls_channels = 1 if objectness == "sigmoid" else 2
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
        distinct = self.num_anchors_per_level
        if len(set(distinct)) == 1:
            distinct = distinct[:1]  # one shared pair of 1x1 convs
        self.cls_logits = nn.ModuleList(
            nn.Conv2d(in_channels, a * self.cls_channels, kernel_size=1) for a in distinct
        )
        self.bbox_pred = nn.ModuleList(
            nn.Conv2d(in_channels, a * 4, kernel_size=1) for a in distinct
        )
        for layer in [self.conv, *self.cls_logits, *self.bbox_pred]:
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Features [(B, C, H_l, W_l)] -> objectness [(B, A_l*K_obj, H_l, W_l)], deltas
        [(B, A_l*4, H_l, W_l)]."""
        logits, deltas = [], []
        for level, feature in enumerate(features):
            t = F.relu(self.conv(feature))
            i = level if len(self.cls_logits) > 1 else 0
            logits.append(self.cls_logits[i](t))
            deltas.append(self.bbox_pred[i](t))
        return logits, deltas

    def flatten(self, logits: Sequence[Tensor], deltas: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Per-level maps -> (B, A_total) objectness logits and (B, A_total, 4) deltas.

        The softmax form's logit is fg - bg: sigmoid(fg - bg) is the softmax foreground
        probability, and binary cross-entropy on it equals the 2-class cross-entropy.
        """
        flat_logits, flat_deltas = [], []
        for lg, dl in zip(logits, deltas):
            b, _, h, w = lg.shape
            if self.cls_channels == 2:
                lg = lg.view(b, 2, -1, h, w)  # (B, 2A, H, W) -> (B, 2, A, H, W)
                lg = lg[:, 1] - lg[:, 0]  # (B, A, H, W): fg - bg
            flat_logits.append(lg.permute(0, 2, 3, 1).reshape(b, -1))  # (B,A,H,W)->(B,H*W*A)
            dl = dl.view(b, -1, 4, h, w)  # (B, A*4, H, W) -> (B, A, 4, H, W)
            flat_deltas.append(dl.permute(0, 3, 4, 1, 2).reshape(b, -1, 4))  # -> (B, H*W*A, 4)
        return torch.cat(flat_logits, dim=1), torch.cat(flat_deltas, dim=1)


@dataclass
class RPNOutput:
    """What ``RegionProposalNetwork.forward`` returns. Losses are empty without targets."""

    proposals: Proposals
    losses: dict[str, Tensor]
    pred_objectness: Tensor  # (B, A_total) logits
    pred_deltas: Tensor  # (B, A_total, 4)
    anchors: Tensor  # (A_total, 4) xyxy
    feature_sizes: list[tuple[int, int]] = field(default_factory=list)  # [(H_l, W_l)]
    match: MatchResult | None = None
    sample: SampledAnchors | None = None
    # localization mode: the centerness loss's own matching and sample (positives, then background)
    localization: tuple[MatchResult, SampledAnchors] | None = None
    # Cascade RPN (cascade_rpn.py): the (B, A_total, 4) xyxy stage-1 boxes, which pred_deltas
    # refine (with the cascade's own box coder), and stage 1's region assignment
    refined_anchors: Tensor | None = None
    stage1_match: MatchResult | None = None


def gather_boxes(boxes: Tensor, idx: Tensor) -> Tensor:
    """The boxes at (B, N) anchor indices: (A, 4) boxes shared by the batch, or (B, A, 4)
    boxes of each image (the Cascade RPN's refined anchors) -> (B, N, 4)."""
    if boxes.dim() == 2:
        return boxes[idx]
    return boxes.gather(1, idx[..., None].expand(-1, -1, 4))


@functools.lru_cache(maxsize=64)
def _level_tables(
    level_sizes: tuple[int, ...], pre_nms_top_n: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Index tables for per-level top-k, cached: built from Python ints once per feature size,
    since copying host lists to the GPU on every call would synchronise.

    Returns (L, N_max) flat anchor index of each level's n-th anchor, (L, N_max) validity of
    that entry, (L, k) validity of each top-k slot, and (L * k,) level of each slot.
    """
    n_max = max(level_sizes)
    k = max(min(pre_nms_top_n, n) for n in level_sizes)
    sizes = torch.tensor(level_sizes)
    starts = torch.cumsum(torch.tensor([0, *level_sizes[:-1]]), 0)
    pos = torch.arange(n_max)
    index = (starts[:, None] + pos[None, :]).clamp(max=sum(level_sizes) - 1)
    entry_valid = pos[None, :] < sizes[:, None]
    slot_valid = torch.arange(k)[None, :] < sizes.clamp(max=pre_nms_top_n)[:, None]
    slot_level = torch.arange(len(level_sizes)).repeat_interleave(k)
    return tuple(t.to(device) for t in (index, entry_valid, slot_valid, slot_level))


def level_top_k(
    pred_objectness: Tensor, level_sizes: Sequence[int], pre_nms_top_n: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Step 1 of ``select_proposals``: (B, A_total) logits, anchors per level -> the top
    ``pre_nms_top_n`` of every level of every image: (B, L, k) logits (decreasing), (B, L, k)
    flat anchor indices, (L, k) validity of each slot and (L*k,) level of each slot.

    Levels are padded into one (B, L, N_max) tensor so that a single topk serves them all,
    through index tables cached per feature size (no host-to-device copy, so no sync).
    """
    device = pred_objectness.device
    num_levels = len(level_sizes)
    # torch.compile traces the tables' function itself (it ignores the cache, and says so
    # when it meets one): the same tables, built inside the graph
    tables = _level_tables.__wrapped__ if torch.compiler.is_compiling() else _level_tables
    level_index, level_valid, slot_valid, slot_level = tables(
        tuple(int(n) for n in level_sizes), int(pre_nms_top_n), torch.device(device)
    )  # (L, N_max), (L, N_max), (L, k), (L*k,)
    k = slot_valid.shape[1]
    if num_levels == 1:
        top_logits, top_pos = pred_objectness.topk(k, dim=1)  # (B, k)
        top_logits, top_pos = top_logits[:, None], top_pos[:, None]  # (B, 1, k)
    else:
        padded = pred_objectness[:, level_index]  # (B, L, N_max)
        padded = padded.masked_fill(~level_valid, float("-inf"))
        top_logits, top_pos = padded.topk(k, dim=2)  # (B, L, k)
    top_idx = level_index[torch.arange(num_levels, device=device)[:, None], top_pos]  # (B, L, k)
    return top_logits, top_idx, slot_valid, slot_level


def select_proposals(
    pred_objectness: Tensor,
    pred_deltas: Tensor,
    anchors: Tensor,
    level_sizes: Sequence[int],
    image_sizes: Tensor,
    config: ProposalConfig,
    *,
    box_coder: BoxCoder | None = None,
    image_scales: Tensor | None = None,
    # The two steps whose sizes rpnkit reads on the host. Only rpnkit.export passes others
    # (its graph twins, rpnkit/export/graph_ops.py); every other caller keeps these defaults.
    top_per_level: Callable[..., tuple[Tensor, Tensor, Tensor, Tensor]] = level_top_k,
    nms: Callable[..., Tensor] = nms_keep,
) -> Proposals:
    """Head outputs of the whole batch -> padded proposals, with no loop over images or levels.

    (B, A_total) logits, (B, A_total, 4) deltas, (A_total, 4) anchors (or (B, A_total, 4)
    anchors of each image), per-level anchor counts, (B, 2) image (height, width) -> Proposals
    with K = min(post_nms_top_n, L * N_pre).
    The inputs should be detached: no gradient flows through the proposal boxes.
    """
    box_coder = box_coder or BoxCoder()
    num_images = pred_objectness.shape[0]
    device = pred_objectness.device
    num_levels = len(level_sizes)

    # 1. Top-N per level by objectness, before decoding anything.
    top_logits, top_idx, slot_valid, slot_level = top_per_level(
        pred_objectness, level_sizes, config.pre_nms_top_n
    )  # (B, L, k), (B, L, k), (L, k), (L*k,)
    k = slot_valid.shape[1]

    # 2. Decode only the selected anchors and clip them to their image.
    flat_idx = top_idx.reshape(num_images, -1)  # (B, L*k)
    deltas = gather_boxes(pred_deltas, flat_idx)  # (B, L*k, 4)
    boxes = box_coder.decode(deltas, gather_boxes(anchors, flat_idx))  # (B, L*k, 4)
    boxes = clip_boxes(boxes, image_sizes)
    logits = top_logits.reshape(num_images, -1).float()  # (B, L*k)
    scores = torch.sigmoid(logits)

    # 3. Drop small boxes, low scores and unused slots.
    min_size = torch.full((num_images, 1), config.min_size, device=device)
    if image_scales is not None:
        min_size = min_size * image_scales.to(device).reshape(-1, 1)
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    valid = (
        slot_valid.reshape(1, -1)
        & (widths >= min_size)
        & (heights >= min_size)
        & (scores >= config.score_threshold)
        & torch.isfinite(boxes).all(-1)  # a diverging network's NaN boxes are never proposed
    )  # (B, L*k)

    # 4. NMS within each (image, level) group, or within each image across levels.
    levels = slot_level[None].expand(num_images, -1)  # (B, L*k)
    keep = _suppress(boxes, scores, valid, config, num_levels=num_levels, k=k, nms=nms)

    # 5. Top-K per image over the survivors of every level.
    num_out = min(config.post_nms_top_n, logits.shape[1])
    ranked = scores.masked_fill(~keep, -1.0)
    out_idx = ranked.sort(dim=1, descending=True, stable=True).indices[:, :num_out]  # (B, K)
    num = keep.sum(dim=1).clamp(max=num_out)  # (B,)
    out_valid = torch.arange(num_out, device=device)[None, :] < num[:, None]
    out_boxes = gather_boxes(boxes, out_idx)  # (B, K, 4)
    # padding slots are zeros, chosen with where: multiplying by a mask would keep a NaN
    return Proposals(
        boxes=torch.where(out_valid[..., None], out_boxes, 0.0),
        scores=torch.where(out_valid, scores.gather(1, out_idx), 0.0),
        levels=torch.where(out_valid, levels.gather(1, out_idx), 0),
        num=num,
    )


def _suppress(
    boxes: Tensor,
    scores: Tensor,
    valid: Tensor,
    config: ProposalConfig,
    *,
    num_levels: int,
    k: int,
    nms: Callable[..., Tensor] = nms_keep,
) -> Tensor:
    """(B, L*k, 4) boxes, (B, L*k) scores and validity, each level's k slots sorted by
    decreasing logit -> (B, L*k) kept after NMS. Ranking is by probability with ties in (level,
    logit) order, as torchvision's stable sorts give: distinct logits often round to the same
    float32 probability."""
    num_images = boxes.shape[0]
    if config.nms_per_level or num_levels == 1:
        # each (image, level) row of k boxes is already sorted by decreasing logit
        return nms(
            boxes.view(num_images * num_levels, k, 4),
            valid.view(num_images * num_levels, k),
            config.nms_threshold,
            max_keep=config.post_nms_top_n,  # no level gives more than the image keeps
        ).view(num_images, -1)
    ranked = scores.masked_fill(~valid, -1.0)
    order = ranked.sort(dim=1, descending=True, stable=True).indices  # (B, L*k)
    sorted_keep = nms(
        gather_boxes(boxes, order),
        valid.gather(1, order),
        config.nms_threshold,
        max_keep=config.post_nms_top_n,
    )
    return torch.zeros_like(sorted_keep).scatter_(1, order, sorted_keep)


def rpn_losses(
    pred_objectness: Tensor,
    pred_deltas: Tensor,
    anchors: Tensor,
    gt_boxes: Tensor,
    match: MatchResult,
    sample: SampledAnchors,
    *,
    config: RPNConfig,
    num_positions: int,
    box_coder: BoxCoder | None = None,
) -> dict[str, Tensor]:
    """Objectness and box losses on the sampled anchors.

    (B, A_total) logits, (B, A_total, 4) deltas, (A_total, 4) anchors (or (B, A_total, 4) per
    image), (B, G, 4) GT boxes. ``num_positions`` is the number of anchor positions of one
    image (sum of H_l * W_l), the paper's N_reg. Normalisation: modern, both terms by the
    number of sampled anchors and lambda = 1; paper, objectness by the sampled anchors (N_cls =
    256 per image) and boxes by the anchor positions, lambda = 10.
    """
    box_coder = box_coder or BoxCoder(config.box_coder_weights)
    num_images = pred_objectness.shape[0]
    pos_idx, pos_valid = sample.pos_idx, sample.pos_valid  # (B, P)
    neg_idx, neg_valid = sample.neg_idx, sample.neg_valid  # (B, S)

    # 1. Objectness: binary cross-entropy on the sampled positives and negatives.
    pos_logits = pred_objectness.gather(1, pos_idx).float()
    neg_logits = pred_objectness.gather(1, neg_idx).float()
    cls_sum = (F.softplus(-pos_logits) * pos_valid).sum() + (
        F.softplus(neg_logits) * neg_valid
    ).sum()

    # 2. Boxes: regression to the matched GT, on the sampled positives only.
    gt_idx = match.matched_idxs.gather(1, pos_idx).clamp(min=0)  # (B, P)
    pos_gt = gather_boxes(gt_boxes, gt_idx)  # (B, P, 4)
    pos_anchors = gather_boxes(anchors, pos_idx)  # (B, P, 4)
    # empty slots regress an anchor onto itself: finite targets, masked out below
    pos_gt = torch.where(pos_valid[..., None], pos_gt, pos_anchors)
    pos_deltas = gather_boxes(pred_deltas, pos_idx).float()  # (B, P, 4)
    if config.box_loss in ("giou", "iou"):
        pred_boxes = box_coder.decode(pos_deltas, pos_anchors)
        loss_fn = generalized_iou_loss if config.box_loss == "giou" else iou_loss
        per_box = loss_fn(pred_boxes, pos_gt)
    else:
        target = box_coder.encode(pos_gt, pos_anchors)
        if config.box_loss == "l1":
            per_box = (pos_deltas - target).abs().sum(-1)
        else:
            per_box = F.smooth_l1_loss(
                pos_deltas, target, beta=config.smooth_l1_beta, reduction="none"
            ).sum(-1)
    box_sum = (per_box * pos_valid).sum()

    # 3. Normalise. The counts stay tensors: no GPU->CPU sync.
    num_sampled = sample.num_sampled().clamp(min=1).to(cls_sum.dtype)
    if config.loss_form == "paper":
        weight = 10.0 if config.box_loss_weight is None else config.box_loss_weight
        box_norm = float(num_positions * num_images)
    else:
        weight = 1.0 if config.box_loss_weight is None else config.box_loss_weight
        box_norm = num_sampled
    return {
        "loss_objectness": cls_sum / num_sampled,
        "loss_rpn_box": weight * box_sum / box_norm,
    }


def centerness_targets(anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """(..., 4) xyxy anchors and their matched (..., 4) xyxy GT boxes -> (...) centerness of
    each anchor's centre inside its box, as FCOS: with l, r, t, b the distances from the centre
    to the box's left, right, top and bottom sides, sqrt(min(l, r) / max(l, r) *
    min(t, b) / max(t, b)). 1 at the box's centre, 0 on or outside its border."""
    cx = (anchors[..., 0] + anchors[..., 2]) / 2
    cy = (anchors[..., 1] + anchors[..., 3]) / 2
    left, right = cx - gt_boxes[..., 0], gt_boxes[..., 2] - cx
    top, bottom = cy - gt_boxes[..., 1], gt_boxes[..., 3] - cy
    tiny = torch.finfo(anchors.dtype).tiny
    # a centre outside the box has a negative distance: clamped, its ratio is 0
    across = torch.minimum(left, right).clamp(min=0) / torch.maximum(left, right).clamp(min=tiny)
    down = torch.minimum(top, bottom).clamp(min=0) / torch.maximum(top, bottom).clamp(min=tiny)
    return torch.sqrt(across * down)


def localization_loss(
    pred_objectness: Tensor,
    anchors: Tensor,
    gt_boxes: Tensor,
    match: MatchResult,
    sample: SampledAnchors,
    *,
    config: LocalizationConfig,
) -> Tensor:
    """OLN's objectness loss: L1 between sigmoid(logit) and the target, the centerness on the
    sampled positives and 0 on the sampled background anchors, averaged over the batch's
    sampled anchors.

    (B, A_total) logits, (A_total, 4) anchors, (B, G, 4) GT boxes; ``match`` and ``sample``
    from the localization matcher and sampler (``localization_matcher_and_sampler``)."""
    pos_idx, pos_valid = sample.pos_idx, sample.pos_valid  # (B, P)
    gt_idx = match.matched_idxs.gather(1, pos_idx).clamp(min=0)  # (B, P)
    pos_gt = gather_boxes(gt_boxes, gt_idx)  # (B, P, 4)
    pos_anchors = gather_boxes(anchors, pos_idx)  # (B, P, 4)
    target = centerness_targets(pos_anchors, pos_gt.to(anchors.dtype))  # (B, P)
    pred = torch.sigmoid(pred_objectness.gather(1, pos_idx).float())  # (B, P)
    # masks select with where: an empty slot's target may be anything, even NaN
    per_positive = torch.where(pos_valid, (pred - target).abs(), 0.0)
    background = torch.sigmoid(pred_objectness.gather(1, sample.neg_idx).float())  # (B, S)
    per_background = torch.where(sample.neg_valid, background, 0.0)  # |pred - 0|
    count = sample.num_sampled().clamp(min=1).to(pred.dtype)  # a tensor: no sync
    return config.loss_weight * (per_positive.sum() + per_background.sum()) / count


def localization_matcher_and_sampler(config: RPNConfig) -> tuple[Matcher, BalancedSampler]:
    """The matcher and sampler of OLN's objectness: positives at IoU >= the threshold (with no
    low-quality matches, as OLN's ``min_pos_iou``), background below ``background_iou``,
    sampled up to ``batch_size_per_image`` per image with ``positive_fraction=1``: positives
    first, background anchors in the slots they leave."""
    loc = config.localization
    matcher = Matcher(
        high_threshold=loc.iou_threshold,
        low_threshold=loc.background_iou,
        allow_low_quality_matches=False,
        crowd_ioa_threshold=config.crowd_ioa_threshold,
        chunk_elements=config.match_chunk_elements,
    )
    return matcher, BalancedSampler(loc.batch_size_per_image, 1.0)


def rpn_matcher(config: RPNConfig) -> Matcher:
    """The anchor matcher of an RPN with this config (also what ``rpnkit show labels`` draws)."""
    return Matcher(
        high_threshold=config.fg_iou_threshold,
        low_threshold=config.bg_iou_threshold,
        allow_low_quality_matches=config.allow_low_quality_matches,
        crowd_ioa_threshold=config.crowd_ioa_threshold,
        chunk_elements=config.match_chunk_elements,
    )


def check_rpn_inputs(
    features: Sequence[Tensor], image_sizes: Tensor, *, anchors: AnchorConfig, in_channels: int
) -> None:
    """An RPN's inputs: one (B, in_channels, H_l, W_l) map per anchor level, (B, 2) sizes."""
    if len(features) == 0 or features[0].shape[0] == 0:
        raise ValueError("empty batch: the RPN needs at least one image")
    if len(features) != len(anchors.levels):
        raise ValueError(
            f"got {len(features)} feature maps but the anchors have {len(anchors.levels)} "
            f"level(s) (strides {anchors.strides}): give one feature map per anchor level"
        )
    num_images = features[0].shape[0]
    for level, f in enumerate(features):
        if f.ndim != 4 or f.shape[0] != num_images or f.shape[1] != in_channels:
            raise ValueError(
                f"feature level {level}: expected shape ({num_images}, {in_channels}, H, W), "
                f"got {tuple(f.shape)}"
            )
    if image_sizes.shape != (num_images, 2):
        raise ValueError(
            f"image_sizes must be ({num_images}, 2) as (height, width) per image, got "
            f"{tuple(image_sizes.shape)}"
        )


def module_proposals(
    rpn: nn.Module,
    pred_objectness: Tensor,
    pred_deltas: Tensor,
    anchors: Tensor,
    feature_sizes: Sequence[tuple[int, int]],
    image_sizes: Tensor,
    proposal_config: ProposalConfig | None,
    image_scales: Tensor | None,
) -> Proposals:
    """``select_proposals`` as an RPN module runs it (``RegionProposalNetwork``, the Cascade
    RPN: their ``anchor_generator``, ``box_coder`` and ``config``), its training or test
    setting unless ``proposal_config`` is given. The outputs are detached: no gradient flows
    through the proposal boxes."""
    if proposal_config is None:
        proposal_config = rpn.config.proposals(rpn.training)
    return select_proposals(
        pred_objectness.detach(),
        pred_deltas.detach(),
        anchors,
        rpn.anchor_generator.level_sizes(feature_sizes),
        image_sizes,
        proposal_config,
        box_coder=rpn.box_coder,
        image_scales=image_scales,
    )


class RegionProposalNetwork(nn.Module):
    """Anchors + head + labelling + losses + proposals, for a whole padded batch at once."""

    def __init__(self, *, in_channels: int, config: RPNConfig) -> None:
        super().__init__()
        self.config = config
        self.anchor_generator = AnchorGenerator(config.anchors)
        self.head = RPNHead(
            in_channels=in_channels,
            num_anchors_per_level=config.anchors.num_anchors_per_level,
            objectness=config.objectness,
        )
        self.box_coder = BoxCoder(config.box_coder_weights)
        self.matcher = rpn_matcher(config)
        self.sampler = BalancedSampler(config.batch_size_per_image, config.positive_fraction)
        if config.objectness_mode == "localization":
            matcher_and_sampler = localization_matcher_and_sampler(config)
            self.localization_matcher, self.localization_sampler = matcher_and_sampler
            score = config.localization.initial_score
            for layer in self.head.cls_logits:
                nn.init.constant_(layer.bias, math.log(score / (1 - score)))

    @classmethod
    def from_parts(
        cls, *, anchor_generator: AnchorGenerator, head: RPNHead, config: RPNConfig
    ) -> RegionProposalNetwork:
        """Assemble from a separately built head, checking that it fits the anchors."""
        expected = anchor_generator.num_anchors_per_level
        if list(head.num_anchors_per_level) != list(expected):
            raise ValueError(
                f"the RPN head predicts {head.num_anchors_per_level} anchors per position per "
                f"level, but the anchor config gives {expected} (sizes x ratios per level). "
                f"Build the head with num_anchors_per_level={expected}, or change the anchor "
                f"sizes/ratios to match the head."
            )
        rpn = cls(in_channels=head.in_channels, config=config)
        rpn.anchor_generator = anchor_generator
        rpn.head = head
        return rpn

    def _check_inputs(self, features: Sequence[Tensor], image_sizes: Tensor) -> None:
        check_rpn_inputs(
            features, image_sizes, anchors=self.config.anchors, in_channels=self.head.in_channels
        )

    def forward(
        self,
        features: Sequence[Tensor],
        image_sizes: Tensor,
        targets: GroundTruth | None = None,
        *,
        image_scales: Tensor | None = None,
        proposal_config: ProposalConfig | None = None,
    ) -> RPNOutput:
        """Features [(B, C, H_l, W_l)], (B, 2) image (height, width) -> RPNOutput.

        With ``targets`` the losses are computed too (training); proposals always are, with
        ``proposal_config`` when given, else the config's training or test setting by mode.
        """
        self._check_inputs(features, image_sizes)
        feature_sizes = [(f.shape[-2], f.shape[-1]) for f in features]
        anchors = self.anchor_generator(
            feature_sizes, device=features[0].device, dtype=torch.float32
        )
        pred_objectness, pred_deltas = self.head.flatten(*self.head(features))

        proposals = module_proposals(
            self, pred_objectness, pred_deltas, anchors, feature_sizes, image_sizes,
            proposal_config, image_scales,
        )  # fmt: skip
        output = RPNOutput(proposals, {}, pred_objectness, pred_deltas, anchors, feature_sizes)
        if targets is not None:
            if self.config.objectness_mode == "localization" and not targets.validated:
                targets = targets.check(image_sizes)  # once, for both matchings
            output.match, output.sample = self.label_and_sample_anchors(
                anchors, image_sizes, targets
            )
            output.losses = rpn_losses(
                pred_objectness,
                pred_deltas,
                anchors,
                targets.boxes,
                output.match,
                output.sample,
                config=self.config,
                num_positions=sum(h * w for h, w in feature_sizes),
                box_coder=self.box_coder,
            )
            if self.config.objectness_mode == "localization":
                # the box loss keeps the classification matching; objectness is OLN's
                output.localization = self.label_and_sample_localization(
                    anchors, image_sizes, targets
                )
                output.losses["loss_objectness"] = localization_loss(
                    pred_objectness,
                    anchors,
                    targets.boxes,
                    *output.localization,
                    config=self.config.localization,
                )
        return output

    def label_and_sample_anchors(
        self,
        anchors: Tensor,
        image_sizes: Tensor,
        targets: GroundTruth,
        generator: torch.Generator | None = None,
    ) -> tuple[MatchResult, SampledAnchors]:
        """Match (A_total, 4) anchors to the batch's GT and sample the training anchors.

        Unvalidated ground truth is checked first: on a GPU that is the training step's one
        GPU->CPU sync, which ``collate`` avoids by validating on the CPU.
        """
        return self._label_and_sample(
            self.matcher, self.sampler, anchors, image_sizes, targets, generator
        )

    def label_and_sample_localization(
        self,
        anchors: Tensor,
        image_sizes: Tensor,
        targets: GroundTruth,
        generator: torch.Generator | None = None,
    ) -> tuple[MatchResult, SampledAnchors]:
        """Localization mode: match (A_total, 4) anchors at OLN's IoU thresholds and sample
        positives first, then background, for the centerness loss."""
        return self._label_and_sample(
            self.localization_matcher,
            self.localization_sampler,
            anchors,
            image_sizes,
            targets,
            generator,
        )

    def _label_and_sample(
        self,
        matcher: Matcher,
        sampler: BalancedSampler,
        anchors: Tensor,
        image_sizes: Tensor,
        targets: GroundTruth,
        generator: torch.Generator | None,
    ) -> tuple[MatchResult, SampledAnchors]:
        """Check unvalidated GT, match the visible (A_total, 4) anchors with ``matcher`` and
        sample the training anchors with ``sampler``."""
        if not targets.validated:
            targets = targets.check(image_sizes)
        visible = visible_anchors(anchors, image_sizes, self.config.allowed_border)
        match = matcher(anchors, targets.boxes, targets.mask, targets.ignore, visible)
        return match, sampler(match.labels(), generator=generator)
