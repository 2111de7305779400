"""OLN's localization-quality objectness (``RPNConfig.objectness_mode="localization"``) and the
novel-class recall protocol (``evaluation/open_world.py``)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from rpnkit.config import config_from_dict, config_to_dict, load_config, save_config
from rpnkit.engine.checkpoint import RPN, ModelSpec, load_model, save_checkpoint
from rpnkit.evaluation.open_world import (
    VOC_CLASSES_IN_COCO,
    drop_seen_proposals,
    novel_class_recall,
    seen_flags,
)
from rpnkit.modeling.anchors import AnchorConfig
from rpnkit.modeling.matching import BELOW_LOW_THRESHOLD, MatchResult, SampledAnchors
from rpnkit.modeling.presets import (
    PRESETS,
    ModelConfig,
    build_model,
    preset_config,
    with_objectness_mode,
)
from rpnkit.modeling.rpn import (
    LocalizationConfig,
    ProposalConfig,
    RegionProposalNetwork,
    RPNConfig,
    centerness_targets,
    localization_loss,
    localization_matcher_and_sampler,
)
from rpnkit.modeling.structures import GroundTruth

# ---------------------------------------------------------------------------------------------
# Centerness targets


def test_centerness_by_hand():
    box = torch.tensor([0.0, 0.0, 10.0, 10.0])
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # centred in its box: 1
            [4.0, 4.0, 6.0, 6.0],  # a small anchor, same centre: 1 (only the centre counts)
            [0.0, 0.0, 4.0, 4.0],  # centre (2, 2): l=2 r=8, t=2 b=8 -> sqrt(1/4 * 1/4) = 1/4
            [1.0, 3.0, 5.0, 7.0],  # centre (3, 5): l=3 r=7, t=5 b=5 -> sqrt(3/7 * 1) = 0.6547
            [8.0, 0.0, 12.0, 10.0],  # centre (10, 5): on the right side -> 0
            [20.0, 20.0, 30.0, 30.0],  # centre (25, 25): outside -> 0
        ]
    )
    expected = torch.tensor([1.0, 1.0, 0.25, math.sqrt(3 / 7), 0.0, 0.0])
    got = centerness_targets(anchors, box.expand(len(anchors), 4))
    torch.testing.assert_close(got, expected)


def test_centerness_of_a_non_square_box_and_batched_shapes():
    # box 20 x 10 at (10, 0); centre (14, 6): l=4 r=16 -> 1/4, t=6 b=4 -> 4/6; sqrt(1/6)
    anchors = torch.tensor([[12.0, 4.0, 16.0, 8.0]]).expand(2, 3, 4)
    boxes = torch.tensor([[10.0, 0.0, 30.0, 10.0]]).expand(2, 3, 4)
    got = centerness_targets(anchors, boxes)
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, torch.full((2, 3), math.sqrt(1 / 6)))


# ---------------------------------------------------------------------------------------------
# The loss: centerness on positives, 0 on sampled background


def _hand_case():
    """Five anchors against one GT box (0, 0, 10, 10); anchors 0 and 2 are the sampled
    positives, anchor 4 a sampled negative, the third positive slot is empty."""
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # centerness 1
            [50.0, 50.0, 60.0, 60.0],
            [0.0, 0.0, 4.0, 4.0],  # centerness 1/4
            [60.0, 60.0, 70.0, 70.0],
            [80.0, 80.0, 90.0, 90.0],
        ]
    )
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])  # (1, 1, 4)
    matched = torch.tensor([[0, BELOW_LOW_THRESHOLD, 0, BELOW_LOW_THRESHOLD, BELOW_LOW_THRESHOLD]])
    match = MatchResult(matched_idxs=matched, matched_iou=torch.zeros(1, 5))
    sample = SampledAnchors(
        pos_idx=torch.tensor([[0, 2, 1]]),
        pos_valid=torch.tensor([[True, True, False]]),
        neg_idx=torch.tensor([[4]]),
        neg_valid=torch.tensor([[True]]),
    )
    return anchors, gt, match, sample


def test_loss_by_hand_on_positives_and_sampled_background():
    anchors, gt, match, sample = _hand_case()
    logits = torch.tensor([[0.0, 5.0, math.log(3.0), -7.0, math.log(1 / 4)]], requires_grad=True)
    loss = localization_loss(logits, anchors, gt, match, sample, config=LocalizationConfig())
    # positives: sigmoid 0.5 against 1, sigmoid(log 3) = 0.75 against 0.25; the sampled
    # background anchor: sigmoid(log 1/4) = 0.2 against 0; (0.5 + 0.5 + 0.2) / 3 samples
    torch.testing.assert_close(loss, torch.tensor(0.4))
    loss.backward()
    assert logits.grad[0, [1, 3]].abs().sum() == 0  # the empty slot, an unsampled anchor
    assert (logits.grad[0, [0, 2, 4]] != 0).all()


def test_loss_ignores_empty_slots_and_unsampled_anchors_and_weights():
    anchors, gt, match, sample = _hand_case()
    base = torch.tensor([[0.0, 5.0, math.log(3.0), -7.0, math.log(1 / 4)]])
    changed = base.clone()
    changed[0, [1, 3]] = torch.tensor([float("nan"), 30.0])  # an empty slot, not sampled
    config = LocalizationConfig(loss_weight=2.0)
    a = localization_loss(base, anchors, gt, match, sample, config=config)
    b = localization_loss(changed, anchors, gt, match, sample, config=config)
    torch.testing.assert_close(a, torch.tensor(0.8))
    torch.testing.assert_close(a, b)


def test_localization_matcher_takes_iou_03_positives_and_background_below_01():
    config = RPNConfig(objectness_mode="localization")
    matcher, sampler = localization_matcher_and_sampler(config)
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 5.0],  # IoU 0.5: positive
            [0.0, 0.0, 10.0, 3.0],  # IoU 0.3: positive (>= the threshold)
            [0.0, 0.0, 10.0, 2.5],  # IoU 0.25: neither (not even as the best of nothing)
            [40.0, 40.0, 50.0, 50.0],  # IoU 0: background
        ]
    )
    match = matcher(anchors, gt, torch.tensor([[True]]))
    assert match.matched_idxs[0, :2].tolist() == [0, 0]
    assert (match.matched_idxs[0, 2:] < 0).all()
    sample = sampler(match.labels())
    assert sample.pos_valid.sum() == 2 and sample.pos_idx.shape == (1, 4)
    assert sorted(sample.pos_idx[0, :2].tolist()) == [0, 1]
    # the slots positives leave hold the background anchor only: IoU 0.25 is between
    assert sample.neg_valid.sum() == 1 and sample.neg_idx[0, 0] == 3


# ---------------------------------------------------------------------------------------------
# The RPN in localization mode

CHANNELS = 16
STRIDES = (8, 16)
SIZES_HW = [(128, 160), (100, 150)]


def _rpn(mode: str, seed: int = 0) -> RegionProposalNetwork:
    torch.manual_seed(seed)
    config = RPNConfig(
        anchors=AnchorConfig.pyramid(strides=STRIDES, sizes=(32, 64)),
        objectness_mode=mode,
        train_proposals=ProposalConfig(pre_nms_top_n=200, post_nms_top_n=100),
        test_proposals=ProposalConfig(pre_nms_top_n=200, post_nms_top_n=100),
    )
    return RegionProposalNetwork(in_channels=CHANNELS, config=config)


def _inputs():
    g = torch.Generator().manual_seed(3)
    features = [torch.randn(2, CHANNELS, 128 // s, 160 // s, generator=g) for s in STRIDES]
    targets = GroundTruth.from_lists(
        [torch.tensor([[10.0, 20.0, 60.0, 90.0], [70.0, 5.0, 150.0, 60.0]]), torch.zeros(0, 4)]
    )
    return features, torch.tensor(SIZES_HW), targets


def test_proposals_have_the_same_shapes_in_both_modes():
    features, sizes, targets = _inputs()
    outputs = {}
    for mode in ("classification", "localization"):
        rpn = _rpn(mode)
        rpn.load_state_dict(_rpn("classification").state_dict())  # same weights in both
        for training in (True, False):
            rpn.train(training)
            out = rpn(features, sizes, targets if training else None)
            outputs[mode, training] = out
    for training in (True, False):
        a, b = outputs["classification", training], outputs["localization", training]
        for name in ("boxes", "scores", "levels", "num"):
            x, y = getattr(a.proposals, name), getattr(b.proposals, name)
            assert x.shape == y.shape and x.dtype == y.dtype, name
        # with the same weights the proposals are the same: only the training differs
        torch.testing.assert_close(a.proposals.boxes, b.proposals.boxes)
    assert set(outputs["localization", True].losses) == {"loss_objectness", "loss_rpn_box"}


def test_a_localization_training_step_and_an_image_without_boxes():
    rpn = _rpn("localization").train()
    features, sizes, targets = _inputs()
    out = rpn(features, sizes, targets)
    match, sample = out.localization
    assert sample.pos_valid[1].sum() == 0  # the second image has no GT: no positives
    assert sample.pos_valid[0].sum() > 0
    positives = match.matched_idxs.gather(1, sample.pos_idx)[sample.pos_valid]
    assert (positives >= 0).all()
    # the box loss still uses the classification matching (0.7 / 0.3)
    box_only = _rpn("classification").train()
    box_only.load_state_dict(rpn.state_dict())
    torch.manual_seed(7)
    a = rpn(features, sizes, targets).losses["loss_rpn_box"]
    torch.manual_seed(7)
    b = box_only(features, sizes, targets).losses["loss_rpn_box"]
    torch.testing.assert_close(a, b)
    sum(out.losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in rpn.head.parameters())
    empty = GroundTruth.from_lists([torch.zeros(0, 4)] * 2)
    losses = rpn(features, sizes, empty).losses
    # no box: nothing to regress; every sampled anchor is background and regresses 0
    assert losses["loss_rpn_box"] == 0 and 0 < losses["loss_objectness"] < 1


def test_initial_score_sets_the_objectness_bias():
    assert torch.equal(_rpn("localization").head.cls_logits[0].bias, torch.zeros(3))
    config = dataclasses.replace(
        _rpn("localization").config, localization=LocalizationConfig(initial_score=0.1)
    )
    rpn = RegionProposalNetwork(in_channels=CHANNELS, config=config)
    torch.testing.assert_close(torch.sigmoid(rpn.head.cls_logits[0].bias), torch.full((3,), 0.1))


def test_config_checks():
    with pytest.raises(ValueError, match="objectness_mode"):
        RPNConfig(objectness_mode="centerness")
    with pytest.raises(ValueError, match="needs objectness='sigmoid'"):
        RPNConfig(objectness="softmax", objectness_mode="localization")
    with pytest.raises(ValueError, match="iou_threshold"):
        LocalizationConfig(iou_threshold=0.0)
    with pytest.raises(ValueError, match="initial_score"):
        LocalizationConfig(initial_score=1.0)
    assert RPNConfig().objectness_mode == "classification"
    assert not hasattr(_rpn("classification"), "localization_matcher")


# ---------------------------------------------------------------------------------------------
# Presets, YAML and checkpoints


def test_oln_preset_is_the_base_preset_in_localization_mode():
    oln, base = preset_config("effnet-lite0-fpn-oln"), preset_config("effnet-lite0-fpn")
    assert oln.rpn.objectness_mode == "localization"
    assert dataclasses.replace(oln, preset=base.preset) == with_objectness_mode(
        base, "localization"
    )
    assert all(PRESETS[name]().rpn.objectness_mode == "classification" for name in PRESETS
               if "oln" not in name)  # fmt: skip


def test_yaml_round_trip_and_old_configs_read_as_classification(tmp_path):
    config = with_objectness_mode(preset_config("tiny"), "localization")
    config = dataclasses.replace(
        config,
        rpn=dataclasses.replace(
            config.rpn, localization=LocalizationConfig(0.4, 0.05, 128, 2.0, 0.2)
        ),
    )
    save_config(config, tmp_path / "model.yaml")
    assert "objectness_mode: localization" in (tmp_path / "model.yaml").read_text()
    assert load_config(ModelConfig, tmp_path / "model.yaml") == config
    old = config_to_dict(preset_config("tiny"))
    del old["rpn"]["objectness_mode"], old["rpn"]["localization"]
    assert config_from_dict(ModelConfig, old).rpn.objectness_mode == "classification"


def test_checkpoint_round_trip_of_the_mode(tmp_path):
    config = with_objectness_mode(preset_config("tiny"), "localization")
    spec = ModelSpec(RPN, config, ("thing",))
    torch.manual_seed(0)
    model = build_model(config)
    path = save_checkpoint(tmp_path / "oln.safetensors", model, config=spec.to_dict())
    loaded, loaded_spec = load_model(path)
    assert loaded_spec.config.rpn.objectness_mode == "localization"
    assert loaded_spec == spec
    assert hasattr(loaded.rpn, "localization_matcher")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # a checkpoint written before the mode existed loads as classification
    old = spec.to_dict()
    del old["model"]["rpn"]["objectness_mode"], old["model"]["rpn"]["localization"]
    old_path = save_checkpoint(tmp_path / "old.safetensors", model, config=old)
    assert load_model(old_path)[1].config.rpn.objectness_mode == "classification"


# ---------------------------------------------------------------------------------------------
# The novel-class protocol

SEEN = [0.0, 0.0, 10.0, 10.0]
NOVEL = [20.0, 20.0, 30.0, 30.0]


def _recall(proposals, gt, seen, max_dets=(1, 2)):
    boxes = torch.tensor([proposals])
    return novel_class_recall(
        boxes,
        torch.ones(1, len(proposals), dtype=torch.bool),
        torch.tensor([gt]),
        torch.ones(1, len(gt), dtype=torch.bool),
        torch.tensor([seen]),
        max_dets=max_dets,
    )


def test_a_proposal_on_a_seen_object_does_not_use_the_budget():
    # the best proposal lies on the seen object, the second on the novel one: with a budget of
    # one, the seen hit is removed first, so the novel box is found at every IoU threshold
    metrics = _recall([SEEN, NOVEL], [SEEN, NOVEL], [True, False])
    assert metrics["AR@1"] == 1.0 and metrics["num_novel"] == 1
    # counted the standard way the seen hit would use the only slot
    assert _recall([SEEN, NOVEL], [SEEN, NOVEL], [False, False], max_dets=(1,))["AR@1"] == 0.5


def test_a_proposal_below_05_iou_with_a_seen_object_uses_the_budget():
    near_seen = [0.0, 0.0, 10.0, 4.0]  # IoU 0.4 with the seen box: kept, and it is first
    metrics = _recall([near_seen, NOVEL], [SEEN, NOVEL], [True, False])
    assert metrics["AR@1"] == 0.0 and metrics["AR@2"] == 1.0
    at_half = [0.0, 0.0, 10.0, 5.0]  # IoU exactly 0.5: removed
    assert _recall([at_half, NOVEL], [SEEN, NOVEL], [True, False])["AR@1"] == 1.0


def test_novel_recall_by_hand_over_iou_thresholds():
    # the novel box found by a proposal at IoU 0.78 (of the thresholds 0.5:0.05:0.95, the six
    # up to 0.75 count it), after two seen hits that the budget of one does not count
    shifted = [20.0, 20.0, 30.0, 27.8]  # IoU 0.78
    metrics = _recall([SEEN, SEEN, shifted], [SEEN, NOVEL], [True, False], max_dets=(1,))
    assert metrics["AR@1"] == pytest.approx(0.6)


def test_drop_seen_proposals_keeps_order_and_zero_padding():
    boxes = torch.tensor([[NOVEL, SEEN, [21.0, 20.0, 30.0, 30.0], SEEN]])
    valid = torch.tensor([[True, True, True, False]])
    out, out_valid = drop_seen_proposals(
        boxes, valid, torch.tensor([[SEEN]]), torch.tensor([[True]])
    )
    assert out_valid.tolist() == [[True, True, False, False]]
    assert out[0, :2].tolist() == [NOVEL, [21.0, 20.0, 30.0, 30.0]]
    assert (out[0, 2:] == 0).all()


def test_seen_flags_by_class_name():
    names = ["zebra", *VOC_CLASSES_IN_COCO, "kite"]  # person is 15, tv 21, kite 22
    labels = torch.tensor([[15, 1, 21], [22, 0, 0]])  # 0: padding
    assert seen_flags(labels, names, VOC_CLASSES_IN_COCO).tolist() == [
        [True, False, True],
        [False, False, False],
    ]
    assert len(VOC_CLASSES_IN_COCO) == 20
    with pytest.raises(ValueError, match="aeroplane"):
        seen_flags(labels, names, ["aeroplane"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_localization_training_step_has_no_gpu_to_cpu_sync(tmp_path):
    # test_gpu.py's whole Trainer step, with OLN's objectness: its second matching, sampler and
    # loss add no sync either
    from test_gpu import _trainer_on_gpu, assert_steps_without_sync

    torch.manual_seed(0)
    model = build_model(with_objectness_mode(preset_config("tiny"), "localization"))
    assert_steps_without_sync(*_trainer_on_gpu(tmp_path, model))


def test_the_command_line_selects_the_objectness(capsys):
    from rpnkit.cli import main

    argv = ["train", "--print-config", "--preset", "tiny"]
    assert main(argv) == 0
    assert "objectness_mode: classification" in capsys.readouterr().out
    assert main([*argv, "--objectness", "localization"]) == 0
    assert "objectness_mode: localization" in capsys.readouterr().out
