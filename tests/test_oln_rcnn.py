"""OLN's full model: the class-agnostic box head that regresses each RoI's IoU
(``RoIHeadConfig.score_mode="localization"``), the combined score sqrt(RPN x IoU), the preset
``effnet-lite0-fpn-oln-rcnn``; and the novel-class protocol as an engine function and as
``rpnkit eval --seen-classes``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rpnkit.config import config_from_dict, config_to_dict
from rpnkit.engine.checkpoint import DETECTOR, load_model, save_checkpoint
from rpnkit.engine.evaluate import NovelClassReport, evaluate_novel_classes
from rpnkit.engine.fit import model_spec
from rpnkit.evaluation.open_world import VOC_CLASSES_IN_COCO, keep_classes, seen_class_names
from rpnkit.modeling.boxes import BoxCoder
from rpnkit.modeling.presets import DetectorConfig, preset_config
from rpnkit.modeling.roi_heads import (
    RoIHeadConfig,
    RoIHeads,
    RoISampler,
    SampledRoIs,
    combined_scores,
    localization_losses,
    postprocess_detections,
    postprocess_localization,
)
from rpnkit.modeling.rpn import Proposals
from rpnkit.modeling.structures import GroundTruth

COCO128 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco128"
GT = [0.0, 0.0, 10.0, 10.0]


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# ---------------------------------------------------------------------------------------------
# IoU targets, loss and score


def test_iou_targets_by_hand_and_every_object_is_class_one():
    # one GT box (class 7: the labels are not used) and five proposals; the GT is appended as
    # a sixth RoI. Every RoI is sampled (16 slots, all may be foreground).
    proposals = torch.tensor(
        [
            [
                [0.0, 0.0, 10.0, 10.0],  # IoU 1
                [0.0, 0.0, 10.0, 8.0],  # 80 / 100 = 0.8
                [0.0, 0.0, 10.0, 5.0],  # 50 / 100 = 0.5: foreground (>= 0.5)
                [5.0, 0.0, 15.0, 10.0],  # 50 / 150 = 1/3: background
                [20.0, 20.0, 30.0, 30.0],  # 0: background
            ]
        ]
    )
    config = RoIHeadConfig.localization(rois_per_image=16, positive_fraction=1.0)
    targets = GroundTruth.from_lists([torch.tensor([GT])], [torch.tensor([7])])
    sample = RoISampler(config)(proposals, torch.ones(1, 5, dtype=torch.bool), targets)
    expected = {  # box -> (label, IoU target)
        (0.0, 0.0, 10.0, 10.0): (1, 1.0),  # the proposal and the appended GT
        (0.0, 0.0, 10.0, 8.0): (1, 0.8),
        (0.0, 0.0, 10.0, 5.0): (1, 0.5),
        (5.0, 0.0, 15.0, 10.0): (0, 0.0),
        (20.0, 20.0, 30.0, 30.0): (0, 0.0),
    }
    n = int(sample.valid.sum())
    assert n == 6 and not sample.valid[0, n:].any()
    for box, label, iou in zip(sample.boxes[0, :n], sample.labels[0, :n], sample.ious[0, :n]):
        want_label, want_iou = expected[tuple(box.tolist())]
        assert int(label) == want_label
        assert float(iou) == pytest.approx(want_iou)
    assert int((sample.labels[0] == 1).sum()) == 4  # two RoIs are the (0, 0, 10, 10) box


def test_combined_score_is_the_geometric_mean_by_hand():
    rpn = torch.tensor([[0.64, 0.25, 0.0]])
    iou_logits = torch.tensor([[_logit(0.25), 0.0, 3.0]])  # IoU 0.25, 0.5, 0.95
    # sqrt(0.64 * 0.25) = 0.4; sqrt(0.25 * 0.5) = 0.35355; an RPN score of 0 gives 0
    expected = torch.tensor([[0.4, math.sqrt(0.125), 0.0]])
    torch.testing.assert_close(combined_scores(rpn, iou_logits), expected)


def test_postprocess_ranks_by_the_combined_score_and_suppresses_class_agnostically():
    # three RoIs, zero deltas (the boxes stay): A and B overlap at IoU 0.81 > 0.7, C apart.
    # RPN order A > B > C, but B's IoU is higher: combined B 0.6 > A 0.4 > C 0.3;
    # NMS keeps B and drops A; C follows.
    config = RoIHeadConfig.localization(detections_per_image=5)
    boxes = torch.tensor(
        [[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 8.1], [50.0, 50.0, 60.0, 60.0]]]
    )
    rpn = torch.tensor([[0.8, 0.72, 0.36]])
    iou = torch.tensor([_logit(0.2), _logit(0.5), _logit(0.25)])[:, None]  # (B*R, 1)
    found = postprocess_localization(
        iou,
        torch.zeros(3, 4),
        boxes,
        torch.ones(1, 3, dtype=torch.bool),
        rpn,
        torch.tensor([[100, 100]]),
        config,
        BoxCoder(config.box_coder_weights),
    )
    assert int(found.num[0]) == 2
    torch.testing.assert_close(found.scores[0, :2], torch.tensor([0.6, 0.3]))
    assert found.boxes[0, :2].tolist() == [boxes[0, 1].tolist(), boxes[0, 2].tolist()]
    assert found.labels[0, :2].tolist() == [1, 1] and found.labels.shape == (1, 5)
    with pytest.raises(ValueError, match="postprocess_localization"):
        postprocess_detections(
            iou, torch.zeros(3, 4), boxes, torch.ones(1, 3, dtype=torch.bool),
            torch.tensor([[100, 100]]), config, BoxCoder(config.box_coder_weights),
        )  # fmt: skip


def test_losses_only_on_positive_rois_divided_by_all_sampled():
    # four slots: RoIs 0 and 2 foreground, 1 background, 3 empty. The background and empty
    # slots have wild predictions and NaN targets: they must not count, but the background
    # RoI counts in the denominator (3 sampled).
    sample = SampledRoIs(
        boxes=torch.zeros(1, 4, 4),
        valid=torch.tensor([[True, True, True, False]]),
        labels=torch.tensor([[1, 0, 1, 0]]),
        targets=torch.tensor(
            [[[0.5, 0.0, 0.0, 0.0], [9.0] * 4, [0.0, -1.0, 0.0, 0.5], [float("nan")] * 4]]
        ),
        ious=torch.tensor([[0.9, 0.0, 0.6, float("nan")]]),
    )
    iou_logits = torch.tensor([[_logit(0.7)], [20.0], [_logit(0.6)], [-20.0]])
    deltas = torch.tensor([[0.0] * 4, [-5.0] * 4, [0.0, 0.0, 0.0, 0.0], [7.0] * 4])
    config = RoIHeadConfig.localization(iou_loss_weight=2.0)
    losses = localization_losses(iou_logits, deltas, sample, config)
    # L1 (beta 0): |0.5| + (|-1| + |0.5|) = 2.0 over 3 sampled RoIs
    assert float(losses["loss_box_reg"]) == pytest.approx(2.0 / 3)
    # IoU: |0.7 - 0.9| + |0.6 - 0.6| = 0.2, weight 2, over 3
    assert float(losses["loss_iou"]) == pytest.approx(2 * 0.2 / 3, abs=1e-6)
    assert set(losses) == {"loss_box_reg", "loss_iou"}  # no classification loss


def test_a_training_step_learns_from_the_iou_branch_and_ignores_labels():
    from test_roi_heads import CH, STRIDES, make_inputs

    torch.manual_seed(0)
    config = RoIHeadConfig.localization(rois_per_image=32, representation_size=32)
    heads = RoIHeads(in_channels=CH, strides=STRIDES, config=config).train()
    feats, proposals, valid, targets, *_ = make_inputs(1)
    targets.labels.fill_(60)  # far beyond num_classes=2: a class-agnostic head does not care
    _, losses, sample = heads(feats, proposals, valid, torch.tensor([[256, 320]] * 3), targets)
    assert set(losses) == {"loss_box_reg", "loss_iou"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert set(sample.labels.unique().tolist()) <= {0, 1} and (sample.labels == 1).any()
    sum(losses.values()).backward()
    assert heads.box_head.iou_score.weight.grad.abs().sum() > 0
    assert not hasattr(heads.box_head, "cls_score")


def test_batched_detections_equal_one_image_at_a_time():
    from test_roi_heads import CH, SIZES, STRIDES, make_inputs

    torch.manual_seed(0)
    config = RoIHeadConfig.localization(representation_size=64, detections_per_image=40)
    heads = RoIHeads(in_channels=CH, strides=STRIDES, config=config).eval()
    torch.nn.init.normal_(heads.box_head.iou_score.weight, std=0.3)
    feats, proposals, valid, *_ = make_inputs(2)
    rpn_scores = torch.rand(valid.shape, generator=torch.Generator().manual_seed(3))
    sizes = torch.tensor(SIZES)
    with torch.no_grad():
        batched, _, _ = heads(feats, proposals, valid, sizes, proposal_scores=rpn_scores)
        for i in range(3):
            alone, _, _ = heads(
                [f[i : i + 1] for f in feats],
                proposals[i : i + 1],
                valid[i : i + 1],
                sizes[i : i + 1],
                proposal_scores=rpn_scores[i : i + 1],
            )
            n = int(alone.num[0])
            assert int(batched.num[i]) == n > 0
            torch.testing.assert_close(batched.scores[i, :n], alone.scores[0, :n])
            torch.testing.assert_close(batched.boxes[i, :n], alone.boxes[0, :n], atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------
# The preset, configs and checkpoints


def test_config_checks_and_the_localization_settings():
    with pytest.raises(ValueError, match="num_classes=2"):
        RoIHeadConfig(score_mode="localization")
    with pytest.raises(ValueError, match="score_mode"):
        RoIHeadConfig(score_mode="iou")
    config = RoIHeadConfig.localization()
    # OLN's oln_box.py: 512 RoIs, 25 % foreground at IoU 0.5, L1, NMS 0.7, no score threshold
    assert (config.rois_per_image, config.positive_fraction, config.fg_iou) == (512, 0.25, 0.5)
    assert (config.smooth_l1_beta, config.nms_threshold, config.score_threshold) == (0, 0.7, 0)
    assert config.class_agnostic and not RoIHeadConfig().class_agnostic
    assert config_from_dict(RoIHeadConfig, config_to_dict(config)) == config
    old = config_to_dict(RoIHeadConfig())
    del old["score_mode"], old["iou_loss_weight"]  # a config written before the mode existed
    assert config_from_dict(RoIHeadConfig, old) == RoIHeadConfig()


def test_the_preset_is_the_oln_rpn_without_nms_and_the_localization_head():
    for name in ("effnet-lite0-fpn-oln-rcnn", "tiny-oln-rcnn"):
        spec = model_spec(DETECTOR, name, ["cat", "kite", "dog"])
        rpn = spec.config.model.rpn
        assert rpn.objectness_mode == "localization"
        assert rpn.test_proposals.nms_threshold == 1.0 == rpn.train_proposals.nms_threshold
        assert spec.config.roi.score_mode == "localization" and spec.config.roi.num_classes == 2
    base = preset_config("effnet-lite0-fpn-oln")
    full = preset_config("effnet-lite0-fpn-oln-rcnn")
    assert full.backbone == base.backbone and full.rpn.anchors == base.rpn.anchors
    assert full.rpn.test_proposals.post_nms_top_n == 2000


def test_checkpoint_round_trip_and_the_runtime(tmp_path):
    from rpnkit.engine.runtime import load

    spec = model_spec(DETECTOR, "tiny-oln-rcnn", ["cat", "kite"])
    torch.manual_seed(0)
    model = spec.build(pretrained=False)
    path = save_checkpoint(tmp_path / "oln.safetensors", model, config=spec.to_dict())
    loaded, loaded_spec = load_model(path)
    assert loaded_spec == spec
    assert isinstance(loaded_spec.config, DetectorConfig)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    runtime = load(path, "cpu", short_side=128, max_size=192)
    assert runtime.class_agnostic and runtime.class_names == ("object",)
    image = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)
    (result,) = runtime.detect(image)
    assert len(result.boxes) > 0 and set(result.names) == {"object"}
    assert torch.isfinite(result.scores).all() and (result.scores <= 1).all()


# ---------------------------------------------------------------------------------------------
# The novel-class protocol through the engine


CAT, KITE = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]


def _batch(proposal_boxes: list, gt: list, labels: list):
    n = len(proposal_boxes)
    meta = {
        "boxes": torch.tensor(gt),
        "labels": torch.tensor(labels),
        "ignore": torch.zeros(len(gt), dtype=torch.bool),
        "areas": torch.tensor([100.0] * len(gt)),
    }
    found = Proposals(
        torch.tensor([proposal_boxes]),
        torch.linspace(1, 0.5, n)[None],
        torch.zeros(1, n, dtype=torch.int64),
        torch.tensor([n]),
    )
    return [meta], found


def test_novel_class_recall_by_hand_through_the_engine():
    # image 0: a cat (seen) and a kite (novel); proposals: the cat first, then the kite.
    # image 1: a kite alone, no proposal on it. With a budget of one, the seen hit of image 0
    # is removed before the budget: the kite is found; image 1's is not: novel AR@1 = 1/2.
    # Counted the standard way over all classes, image 0's only slot goes to the cat: 1 of 3.
    batches = [
        _batch([CAT, KITE], [CAT, KITE], [1, 2]),
        _batch([[40.0, 40.0, 50.0, 50.0]], [KITE], [2]),
    ]
    report = evaluate_novel_classes(
        batches, ["cat", "kite"], "cat", max_dets=(1, 2), all_max_dets=(1, 2)
    )
    assert isinstance(report, NovelClassReport)
    assert report.novel["num_novel"] == 2
    assert report.novel["AR@1"] == pytest.approx(0.5)
    assert report.novel["AR@2"] == pytest.approx(0.5)
    assert report.all.metrics["AR@1"] == pytest.approx(1 / 3)
    assert report.all.metrics["AR@2"] == pytest.approx(2 / 3)
    assert report.metrics["seen_classes"] == ["cat"]
    assert "novel classes: 2 boxes" in report.format()
    with pytest.raises(ValueError, match="zebra"):
        evaluate_novel_classes(batches, ["cat", "kite"], "zebra")


def test_seen_class_names_and_keep_classes():
    assert seen_class_names("voc") == VOC_CLASSES_IN_COCO
    assert seen_class_names(" person, kite,person ") == ("person", "kite")
    assert seen_class_names(["VOC", "kite"]) == (*VOC_CLASSES_IN_COCO, "kite")
    with pytest.raises(ValueError, match="no seen class"):
        seen_class_names(" , ")
    from rpnkit.data import read_dataset

    index = read_dataset(COCO128 / "annotations" / "instances_train2017.json")
    kept = keep_classes(index, ["person"])
    person = index.class_names.index("person") + 1
    for before, after in zip(index.records, kept.records):
        assert (after.labels == person).all()
        assert len(after.boxes) == int((before.labels == person).sum())
    with pytest.raises(ValueError, match="zebrafish"):
        keep_classes(index, ["zebrafish"])


# ---------------------------------------------------------------------------------------------
# rpnkit eval --seen-classes


def _few_coco128_images(tmp_path: Path, count: int = 4) -> Path:
    """A COCO JSON of COCO128's first ``count`` train images (the images stay where they are:
    --images points at them)."""
    data = json.loads((COCO128 / "annotations" / "instances_train2017.json").read_text())
    images = data["images"][:count]
    ids = {im["id"] for im in images}
    data["images"] = images
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    path = tmp_path / "few.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("kind", ["rpn", "oln-rcnn"])
def test_cli_eval_seen_classes(tmp_path, capsys, kind):
    from rpnkit.cli import main
    from rpnkit.engine.checkpoint import RPN

    if kind == "rpn":
        spec = model_spec(RPN, "tiny", [])
    else:
        spec = model_spec(DETECTOR, "tiny-oln-rcnn", ["person"])
    torch.manual_seed(0)
    path = save_checkpoint(
        tmp_path / "m.safetensors", spec.build(pretrained=False), config=spec.to_dict()
    )
    data = _few_coco128_images(tmp_path)
    images = COCO128 / "images" / "train2017"
    argv = ["eval", "--checkpoint", str(path), "--data", str(data), "--images", str(images)]
    argv += ["--short-side", "128", "--max-size", "192", "--no-progress", "--device", "cpu"]
    out = tmp_path / "metrics.json"
    assert main([*argv, "--seen-classes", "voc", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "novel classes:" in printed and "all classes:" in printed
    metrics = json.loads(out.read_text())
    assert metrics["seen_classes"] == list(VOC_CLASSES_IN_COCO)
    assert metrics["novel"]["num_novel"] > 0 and "AR@1000" in metrics["novel"]
    assert 0 <= metrics["all"]["AR@100"] <= 1
    if kind == "oln-rcnn":  # without --seen-classes: its final boxes scored as proposals
        assert main([*argv, "--out", str(out)]) == 0
        assert "AR@1000" in json.loads(out.read_text())
    assert main([*argv, "--seen-classes", "zebrafish"]) == 2  # one line, as argparse errors
    assert "zebrafish" in capsys.readouterr().err
