"""``rpnkit show`` on a Cascade RPN checkpoint (the tiny-cascade preset trained for 2 steps on
four COCO128 images): labels draws the cascade's own two assignments, nms and proposals draw
the model's own proposals."""

import json
from pathlib import Path

import pytest
import torch

from rpnkit.cli import main
from rpnkit.data import collate
from rpnkit.engine.runtime import load
from rpnkit.modeling.boxes import box_iou
from rpnkit.viz import overlays

COCO128 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco128"
SIZE = ["--short-side", "128", "--max-size", "192"]
DATA = [str(COCO128), "--split", "train2017", *SIZE]  # show reads image 0 of COCO128's train
TOP = 5


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """tiny-cascade trained for 2 steps on the first four COCO128 images with boxes."""
    tmp = tmp_path_factory.mktemp("cascade")
    coco = json.loads((COCO128 / "annotations" / "instances_train2017.json").read_text())
    keep = sorted({a["image_id"] for a in coco["annotations"]})[:4]
    coco["images"] = [im for im in coco["images"] if im["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    (tmp / "train.json").write_text(json.dumps(coco))
    args = ["train", "--data", str(tmp / "train.json"), "--preset", "tiny-cascade"]
    args += ["--images", str(COCO128 / "images" / "train2017"), "--steps", "2"]
    args += ["--batch-size", "2", "--workers", "0", "--no-progress", "--out", str(tmp / "run")]
    assert main(args + SIZE) == 0
    return tmp / "run" / "checkpoint.safetensors"


def _capture(monkeypatch, name: str, keywords: list | None = None) -> list:
    """The arguments of each call of ``overlays.<name>``, which still draws (and its keyword
    arguments into ``keywords``)."""
    calls, original = [], getattr(overlays, name)

    def recording(*args, **kwargs):
        calls.append(args)
        if keywords is not None:
            keywords.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(overlays, name, recording)
    return calls


def _first_stage_output(checkpoint: Path):
    """The checkpoint's first stage on image 0 with its GT, as show sees it: the item and the
    RPNOutput (anchors, stage-1 boxes and both assignments)."""
    predictor = load(checkpoint, "cpu", fold_bn=False, short_side=128, max_size=192)
    item = predictor.dataset(str(COCO128), split="train2017")[0]
    batch = collate([item])
    with torch.no_grad():
        model = predictor.network
        output = model(batch.images, batch.image_sizes, batch.targets)
    return predictor, item, output


def _rows_of(boxes: torch.Tensor, pool: torch.Tensor) -> bool:
    """Every row of (N, 4) ``boxes`` is a row of (M, 4) ``pool``."""
    return bool((boxes[:, None, :] == pool[None]).all(-1).any(-1).all())


def test_labels_draws_the_cascades_own_two_assignments(checkpoint, tmp_path, monkeypatch):
    calls = _capture(monkeypatch, "plot_label_panels")
    out = tmp_path / "labels.png"
    args = ["show", "labels", *DATA, "--checkpoint", str(checkpoint), "--out", str(out)]
    assert main(args) == 0
    assert out.stat().st_size > 0
    ((_, gt, panels, _),) = calls
    assert [p.title.split(",")[0] for p in panels] == ["stage 1", "stage 2"]
    _, _, output = _first_stage_output(checkpoint)
    stage1, stage2 = panels

    # stage 1: the region assigner's positives are anchors whose centre lies in the central
    # region of a GT box (on the level's grid: within half a stride, 1/16 of the anchor)
    assert len(stage1.positive) > 0 and len(stage1.negative) == 0
    assert _rows_of(stage1.positive, output.anchors)
    assert len(stage1.positive) == int((output.stage1_match.matched_idxs >= 0).sum())
    centres = (stage1.positive[:, None, :2] + stage1.positive[:, None, 2:]) / 2  # (P, 1, 2)
    slack = (stage1.positive[:, None, 2:3] - stage1.positive[:, None, 0:1]) / 16  # (P, 1, 1)
    inside = (centres >= gt[None, :, :2] - slack) & (centres <= gt[None, :, 2:] + slack)
    assert inside.all(-1).any(-1).all()

    # stage 2: the IoU matching on the stage-1 boxes, not on the anchors
    refined = output.refined_anchors[0]
    for boxes in (stage2.positive, stage2.negative, stage2.ignored):
        assert _rows_of(boxes, refined)
    assert len(stage2.positive) > 0 and not _rows_of(stage2.positive, output.anchors)
    assert (box_iou(stage2.positive, gt).amax(1) >= 0.3 - 1e-6).all()  # min_pos_iou
    labels = output.match.labels()[0]
    assert len(stage2.positive) == int((labels == 1).sum())
    assert len(stage2.negative) == int((labels == 0).sum())


def test_labels_without_a_checkpoint_draws_stage_1_alone(checkpoint, tmp_path, monkeypatch):
    calls = _capture(monkeypatch, "plot_label_panels")
    out = tmp_path / "labels.png"
    assert main(["show", "labels", *DATA, "--preset", "tiny-cascade", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    ((_, _, panels, _),) = calls
    assert len(panels) == 1 and "stage 2 needs a trained checkpoint" in panels[0].title
    # stage 1 depends on the anchors and the GT alone: the trained model's are the same
    _, _, output = _first_stage_output(checkpoint)
    assert len(panels[0].positive) == int((output.stage1_match.matched_idxs >= 0).sum())
    assert _rows_of(panels[0].positive, output.anchors)


def _proposals_in_network_pixels(predictor, image) -> torch.Tensor:
    """The predictor's own top ``TOP`` proposals of ``image``, in the resized image's pixels."""
    (result,) = predictor.propose(image, top=TOP)
    item = predictor.dataset(image)[0]
    h, w = item["image"].shape[1:]
    oh, ow = result.image_size
    return result.boxes / torch.tensor([ow / w, oh / h, ow / w, oh / h])


def test_nms_draws_the_models_proposals_decoded_from_its_stage_1_boxes(
    checkpoint, tmp_path, monkeypatch
):
    keywords = []
    calls = _capture(monkeypatch, "plot_nms_before_after", keywords)
    image = next(iter(sorted((COCO128 / "images" / "train2017").iterdir())))
    out = tmp_path / "nms.png"
    args = ["show", "nms", str(image), "--checkpoint", str(checkpoint), "--top", str(TOP)]
    assert main([*args, "--out", str(out), *SIZE]) == 0
    assert out.stat().st_size > 0
    ((_, before, after, _),) = calls
    predictor = load(checkpoint, "cpu", fold_bn=False, short_side=128, max_size=192)
    expected = _proposals_in_network_pixels(predictor, image)
    assert len(after) == len(expected) == TOP
    torch.testing.assert_close(after, expected, atol=1e-3, rtol=1e-5)
    # the best box before NMS is the first one kept: both decoded from the stage-1 boxes
    assert len(before) == TOP
    torch.testing.assert_close(before[0], after[0])
    # which of them NMS keeps: the best always; each kept one is among the proposals
    (kept,) = (k["kept"] for k in keywords)
    assert kept[0] and len(kept) == TOP
    for box in before[kept]:
        assert (after == box).all(1).any() or len(after) < TOP


def test_proposals_and_objectness_draw_the_models_own_outputs(checkpoint, tmp_path, monkeypatch):
    calls = _capture(monkeypatch, "plot_proposals_vs_gt")
    out = tmp_path / "proposals.png"
    args = ["show", "proposals", *DATA, "--checkpoint", str(checkpoint), "--top", str(TOP)]
    assert main([*args, "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    ((_, proposals, _, _),) = calls
    predictor = load(checkpoint, "cpu", fold_bn=False, short_side=128, max_size=192)
    image = predictor.dataset(str(COCO128), split="train2017").index.records[0].path
    expected = _proposals_in_network_pixels(predictor, image)
    torch.testing.assert_close(proposals[0][:TOP], expected, atol=1e-3, rtol=1e-5)

    out = tmp_path / "objectness.png"
    args = ["show", "objectness", *DATA, "--checkpoint", str(checkpoint), "--out", str(out)]
    assert main(args) == 0
    assert out.stat().st_size > 0


def test_objectness_and_nms_see_the_image_at_the_checkpoints_size_on_its_device(
    checkpoint, tmp_path, monkeypatch
):
    # show once resized to 800 whatever the checkpoint (propose, detect and eval take its
    # training size, here 128 / 192) and ran the model on the CPU whatever --device said
    from rpnkit.engine.device import resolve_device
    from rpnkit.viz import show

    maps = _capture(monkeypatch, "plot_objectness_maps")
    nms = _capture(monkeypatch, "plot_nms_before_after")
    devices, real_load = [], show.load

    def recording_load(path, device, **kwargs):
        devices.append(device)
        return real_load(path, device, **kwargs)

    monkeypatch.setattr(show, "load", recording_load)
    image = next(iter(sorted((COCO128 / "images" / "train2017").iterdir())))
    args = [str(image), "--checkpoint", str(checkpoint), "--device", "auto"]
    assert main(["show", "objectness", *args, "--out", str(tmp_path / "o.png")]) == 0
    assert main(["show", "nms", *args, "--out", str(tmp_path / "n.png"), "--top", "3"]) == 0
    trained = load(checkpoint, "cpu", fold_bn=False)
    assert (trained.short_side, trained.max_size) == (128, 192)  # what the checkpoint records
    expected = trained.dataset(image)[0]["image"].shape
    assert maps[0][0].shape == nms[0][0].shape == expected
    assert devices == ["auto", "auto"]
    assert nms[0][1].device.type == resolve_device("auto").type  # the model's own boxes
    # --short-side and --max-size still override the checkpoint's size
    size = ["--short-side", "96", "--max-size", "160"]
    assert main(["show", "objectness", *args, *size, "--out", str(tmp_path / "o2.png")]) == 0
    smaller = load(checkpoint, "cpu", fold_bn=False, short_side=96, max_size=160)
    assert maps[1][0].shape == smaller.dataset(image)[0]["image"].shape != expected


def test_labels_of_an_image_without_annotations_stop_with_one_line(tmp_path, capsys):
    # once the region assigner ran on no GT and drew an empty picture
    image = next(iter(sorted((COCO128 / "images" / "train2017").iterdir())))
    out = tmp_path / "labels.png"
    args = ["show", "labels", str(image), "--preset", "tiny-cascade", "--out", str(out), *SIZE]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rpnkit show: error: {image}: an image without annotations: nothing ")
    assert "\n" not in err and not out.exists()
