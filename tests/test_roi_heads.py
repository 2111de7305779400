import dataclasses
from collections import OrderedDict

import pytest
import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads as TVRoIHeads
from torchvision.ops import MultiScaleRoIAlign

from rpnkit.modeling.roi_heads import RoIHeadConfig, RoIHeads
from rpnkit.modeling.structures import GroundTruth

CH, CLASSES, STRIDES = 16, 5, (4, 8, 16, 32)
SIZES = [(256, 320), (240, 300), (256, 288)]


def make_pair(rois_per_image=64, detections=100):
    torch.manual_seed(0)
    config = RoIHeadConfig(
        num_classes=CLASSES,
        rois_per_image=rois_per_image,
        representation_size=64,
        detections_per_image=detections,
    )
    ours = RoIHeads(in_channels=CH, strides=STRIDES, config=config)
    tv = TVRoIHeads(
        MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2),
        TwoMLPHead(CH * 49, 64),
        FastRCNNPredictor(64, CLASSES),
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=rois_per_image,
        positive_fraction=0.25,
        bbox_reg_weights=None,
        score_thresh=0.05,
        nms_thresh=0.5,
        detections_per_img=detections,
    )
    with torch.no_grad():
        for a, b in (
            (ours.box_head.fc6, tv.box_head.fc6),
            (ours.box_head.fc7, tv.box_head.fc7),
            (ours.box_head.cls_score, tv.box_predictor.cls_score),
            (ours.box_head.bbox_pred, tv.box_predictor.bbox_pred),
        ):
            torch.nn.init.normal_(a.weight, std=0.05)
            torch.nn.init.normal_(a.bias, std=0.05)
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
    return ours, tv


def make_inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(3, CH, 256 // s, 320 // s, generator=g) for s in STRIDES]
    counts, gts, labels = (50, 40, 30), [], []
    proposals = torch.zeros(3, 50, 4)
    valid = torch.zeros(3, 50, dtype=torch.bool)
    for i, ((h, w), n) in enumerate(zip(SIZES, counts)):
        xy = torch.rand(6, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        gt = torch.cat([xy, xy + torch.rand(6, 2, generator=g) * 80 + 20], 1)[: 3 + i]
        gts.append(gt)
        labels.append(torch.randint(1, CLASSES, (len(gt),), generator=g))
        # proposals: jittered GT copies (foreground) and random boxes (background)
        jitter = gt.repeat(10, 1)[: n // 2] + torch.randn(n // 2, 4, generator=g) * 6
        xy = torch.rand(n - n // 2, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        rand = torch.cat([xy, xy + torch.rand(n - n // 2, 2, generator=g) * 90 + 10], 1)
        p = torch.cat([jitter, rand])
        p[:, 0::2] = p[:, 0::2].clamp(0, w)
        p[:, 1::2] = p[:, 1::2].clamp(0, h)
        proposals[i, :n], valid[i, :n] = p, True
    return feats, proposals, valid, GroundTruth.from_lists(gts, labels), gts, labels


def test_losses_equal_torchvision_with_deterministic_sampling():
    # torchvision samples with randperm; here it takes rpnkit's sample (its sampler replaced),
    # mapped from rpnkit's padded (proposals | GT) slots to its own (proposals_i, GT_i) order.
    # Equal to float32 summation order: rtol 1e-5.
    ours, tv = make_pair()
    ours.train()
    tv.train()
    feats, proposals, valid, gt, gts, labels = make_inputs()
    _, losses, sample = ours(feats, proposals, valid, torch.tensor(SIZES), gt)
    assert (sample.labels > 0).any() and ((sample.labels == 0) & sample.valid).any()
    n = valid.sum(1).tolist()
    pos_masks, neg_masks = [], []
    for i in range(3):
        # find each sampled RoI in torchvision's (proposals_i, GT_i) list by its coordinates
        tv_boxes = torch.cat([proposals[i, : n[i]], gts[i]])
        same = (tv_boxes[:, None, :] == sample.boxes[i][None]).all(-1)  # (n_i+G_i, R)
        picked = (same & sample.valid[i][None]).any(1)
        fg = (same & (sample.labels[i] > 0)[None] & sample.valid[i][None]).any(1)
        pos_masks.append((picked & fg).to(torch.uint8))
        neg_masks.append((picked & ~fg).to(torch.uint8))
        assert int(picked.sum()) == int(sample.valid[i].sum())  # a one-to-one mapping
    tv.fg_bg_sampler = lambda labels_: (pos_masks, neg_masks)
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(gts, labels)]
    _, tv_losses = tv(
        OrderedDict((str(i), f) for i, f in enumerate(feats)),
        [proposals[i, : n[i]] for i in range(3)],
        SIZES,
        targets,
    )
    assert torch.allclose(losses["loss_classifier"], tv_losses["loss_classifier"], rtol=1e-5)
    assert torch.allclose(losses["loss_box_reg"], tv_losses["loss_box_reg"], rtol=1e-5)


@pytest.mark.parametrize("detections", [100, 7])
def test_detections_equal_torchvision(detections):
    # Same RoIs and weights: the same detections, scores to 1e-6, boxes to 1e-3 px; with 7
    # detections per image the per-image cut after NMS is tested too.
    ours, tv = make_pair(detections=detections)
    ours.eval()
    tv.eval()
    feats, proposals, valid, *_ = make_inputs(2)
    n = valid.sum(1).tolist()
    with torch.no_grad():
        dets, _, _ = ours(feats, proposals, valid, torch.tensor(SIZES))
        tv_dets, _ = tv(
            OrderedDict((str(i), f) for i, f in enumerate(feats)),
            [proposals[i, : n[i]] for i in range(3)],
            SIZES,
        )
    assert dets.boxes.shape == (3, detections, 4)
    for (boxes, scores, labels), ref in zip(dets.per_image(), tv_dets):
        assert len(boxes) == len(ref["boxes"]) > 0
        assert detections == 100 or len(boxes) == detections
        assert torch.allclose(scores, ref["scores"], atol=1e-6)
        assert torch.equal(labels, ref["labels"])
        assert torch.allclose(boxes, ref["boxes"], atol=1e-3)


def test_image_without_boxes_and_absent_classes():
    ours, _ = make_pair()
    feats, proposals, valid, _, gts, labels = make_inputs()
    gts[1] = torch.zeros(0, 4)
    labels[1] = torch.zeros(0, dtype=torch.int64)
    labels[0] = torch.ones_like(labels[0])  # only class 1 in image 0; classes 2-4 absent there
    gt = GroundTruth.from_lists(gts, labels)
    _, losses, sample = ours(feats, proposals, valid, torch.tensor(SIZES), gt)
    assert (sample.labels[1] == 0).all() and sample.valid[1].sum() > 0  # all background
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in ours.parameters() if p.grad is not None)


def test_class_id_out_of_range_is_a_clear_error():
    ours, _ = make_pair()
    feats, proposals, valid, _, gts, labels = make_inputs()
    labels[2][0] = CLASSES  # ids run 1..CLASSES-1
    with pytest.raises(
        ValueError, match=r"image 2: ground-truth box 0 has class id 5 but the head"
    ):
        ours(feats, proposals, valid, torch.tensor(SIZES), GroundTruth.from_lists(gts, labels))


def test_sampling_counts_and_paper_background_range():
    config = RoIHeadConfig.paper(num_classes=CLASSES)
    assert config.rois_per_image == 128 and config.bg_iou == (0.1, 0.5)
    heads = RoIHeads(in_channels=CH, strides=(16,), config=config)
    _, proposals, valid, gt, *_ = make_inputs()
    sample = heads.sampler(proposals, valid, gt)
    fg = (sample.labels > 0) & sample.valid
    assert (fg.sum(1) <= 32).all()  # at most 25 % of 128 foreground
    from rpnkit.modeling.boxes import box_iou

    for i in range(3):  # background RoIs overlap some GT by [0.1, 0.5)
        bg = sample.boxes[i][(sample.labels[i] == 0) & sample.valid[i]]
        real = gt.boxes[i][gt.mask[i]]
        best = box_iou(bg, real).max(1).values
        assert ((best >= 0.1) & (best < 0.5)).all()


def test_nms_candidates_caps_the_pairs_seen_by_nms():
    # With one candidate per image, the single detection is the best passing (RoI, class) pair.
    ours, _ = make_pair()
    ours.eval()
    feats, proposals, valid, *_ = make_inputs(2)
    with torch.no_grad():
        full, _, _ = ours(feats, proposals, valid, torch.tensor(SIZES))
        ours.config = dataclasses.replace(ours.config, nms_candidates=1)
        one, _, _ = ours(feats, proposals, valid, torch.tensor(SIZES))
    assert one.num.tolist() == [1, 1, 1]
    assert torch.equal(one.scores[:, 0], full.scores[:, 0])
    assert torch.equal(one.boxes[:, 0], full.boxes[:, 0])
    assert (one.scores[:, 1:] == 0).all()


def test_batched_detections_equal_one_image_at_a_time():
    # the batched pooling, box head and per-class NMS give each image what it gets alone
    ours, _ = make_pair()
    ours.eval()
    feats, proposals, valid, *_ = make_inputs(2)
    sizes = torch.tensor(SIZES)
    with torch.no_grad():
        batched, _, _ = ours(feats, proposals, valid, sizes)
        for i in range(3):
            alone, _, _ = ours(
                [f[i : i + 1] for f in feats],
                proposals[i : i + 1],
                valid[i : i + 1],
                sizes[i : i + 1],
            )
            n = int(alone.num[0])
            assert int(batched.num[i]) == n > 0
            assert torch.allclose(batched.scores[i, :n], alone.scores[0, :n], atol=1e-6)
            assert torch.equal(batched.labels[i, :n], alone.labels[0, :n])
            assert torch.allclose(batched.boxes[i, :n], alone.boxes[0, :n], atol=1e-4)
