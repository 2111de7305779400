import csv

import torch

from rpnkit.data import SyntheticShapes
from rpnkit.engine.trainer import TrainConfig, train
from rpnkit.modeling.presets import DetectorConfig, build_detector, preset_config
from rpnkit.modeling.roi_heads import RoIHeadConfig


def _detector():
    config = DetectorConfig(
        model=preset_config("tiny"),
        roi=RoIHeadConfig(num_classes=5, rois_per_image=64, representation_size=128),
        pooled_levels=3,
    )
    torch.manual_seed(0)
    return build_detector(config)


def test_joint_training_sums_four_losses_and_learns(tmp_path):
    model = _detector()
    data = SyntheticShapes(16, image_size=128)  # 4 shape classes: labels 1..4
    config = TrainConfig(
        steps=30, batch_size=4, optimizer="adamw", lr=1e-3, warmup_steps=5, log_every=1
    )
    train(model, data, config, out_dir=tmp_path, progress=False)
    with open(tmp_path / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"loss_objectness", "loss_rpn_box", "loss_classifier", "loss_box_reg"} <= set(rows[0])
    first = sum(float(rows[i]["loss_classifier"]) for i in range(3))
    last = sum(float(rows[-i]["loss_classifier"]) for i in range(1, 4))
    assert last < first  # the second stage learns on its sampled RoIs


def test_inference_gives_padded_detections():
    model = _detector().eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 128, 160), torch.tensor([[128, 160], [120, 150]]))
    dets = out.detections
    assert dets.boxes.shape == (2, 100, 4) and dets.scores.shape == (2, 100)
    assert dets.num.min() > 0  # an untrained head spreads scores ~1/5 > 0.05: boxes exist
    for (boxes, scores, labels), (h, w) in zip(dets.per_image(), [(128, 160), (120, 150)]):
        assert ((labels >= 1) & (labels <= 4)).all()  # never the background class
        assert (scores > 0.05).all() and (scores[1:] <= scores[:-1]).all()  # best first
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all() and (boxes >= 0).all()
    assert out.losses == {}
