"""The paper's 4-step alternating training from the CLI, on a few raccoon images."""

import json

import numpy as np
import pytest
import torch
from conftest import RACCOON, train_tiny_on_raccoon

import rpnkit
from rpnkit.data import DetectionDataset, SkippedSample, collate, read_dataset, train_transforms
from rpnkit.engine.alternating import read_proposals
from rpnkit.engine.checkpoint import load_checkpoint


def test_alternating_schedule_runs_the_four_steps(tmp_path):
    run = tmp_path / "alt"
    extra = ["--model", "faster-rcnn", "--schedule", "alternating"]
    assert train_tiny_on_raccoon(run, steps=2, extra=extra) == 0
    for step in ("step1_rpn", "step2_detector", "step3_rpn", "step4_detector"):
        assert (run / step / "checkpoint.safetensors").is_file(), step
        assert (run / step / "train_log.csv").is_file(), step
    # the proposals of steps 1 and 3: COCO results JSON, up to the RPN's training top-n
    # per training image, inside the original image
    index = read_dataset(RACCOON, split_file=RACCOON / "train_labels.csv")
    sizes = {r.file_name: (r.width, r.height) for r in index.records}
    for name in ("step1_proposals.json", "step3_proposals.json"):
        entries = json.loads((run / name).read_text())
        assert {"file_name", "image_id", "bbox", "score"} <= set(entries[0])
        assert {e["file_name"] for e in entries} == set(sizes)
        for e in entries[:500]:
            x, y, w, h = e["bbox"]
            width, height = sizes[e["file_name"]]
            assert w >= 0 and h >= 0 and x + w <= width + 0.01 and y + h <= height + 0.01
    # step 3 trained the RPN only: the backbone is step 2's; step 4 trained the box head only
    step2 = load_checkpoint(run / "step2_detector" / "checkpoint.safetensors")["model"]
    step3 = load_checkpoint(run / "step3_rpn" / "checkpoint.safetensors")["model"]
    final = load_checkpoint(run / "checkpoint.safetensors")["model"]
    # a detector holds its RPN's modules under first_stage.; an RPN at the top
    backbone = [k for k in step3 if k.startswith("backbone.")]
    rpn = [k for k in step3 if k.startswith("rpn.")]
    assert backbone and rpn
    for key in backbone:
        assert torch.equal(step2["first_stage." + key], step3[key]), key
        assert torch.equal(step3[key], final["first_stage." + key]), key
    for key in rpn:
        assert torch.equal(step3[key], final["first_stage." + key]), key
    assert any(not torch.equal(step2[k], final[k]) for k in final if k.startswith("roi_heads."))
    assert any(
        not torch.equal(step2["first_stage." + k], step3[k])
        for k in rpn
        if k.startswith("rpn.head")
    )
    assert rpnkit.load(run / "checkpoint.safetensors", "cpu").class_names == ("raccoon",)
    metrics = json.loads((run / "metrics.json").read_text())
    assert "AP50" in metrics


def test_precomputed_proposals_follow_the_transforms(tmp_path):
    index = read_dataset(RACCOON, split_file=RACCOON / "train_labels.csv")
    record = index.records[0]
    proposals = {str(record.path): np.array([[10, 20, 110, 220], [0, 0, 5, 5]], np.float32)}
    flip = DetectionDataset(index, train_transforms(200, 300, 1.0), proposals=proposals)
    item = flip[0]
    h, w = item["image"].shape[1:]
    sx, sy = w / record.width, h / record.height
    expected = torch.tensor([[w - 110 * sx, 20 * sy, w - 10 * sx, 220 * sy]])
    assert torch.allclose(item["proposals"][:1], expected, atol=1e-3)
    assert len(item["boxes"]) == len(record.boxes)
    # an image without proposals gets none; the batch pads them with a validity mask
    batch = collate([item, flip[1]])
    boxes, valid = batch.proposals
    assert boxes.shape == (2, 2, 4) and valid.tolist() == [[True, True], [False, False]]


def test_proposal_files_are_read_by_file_name_and_bad_ones_are_clear_errors(tmp_path, capsys):
    index = read_dataset(RACCOON, split_file=RACCOON / "train_labels.csv")
    name = index.records[0].file_name
    path = tmp_path / "p.json"
    entries = [
        {"file_name": name, "bbox": [1, 2, 3, 4], "score": 0.2},
        {"file_name": name, "bbox": [5, 6, 7, 8], "score": 0.9},
    ]
    path.write_text(json.dumps(entries))
    proposals = read_proposals(path, index, what="wrote")
    # xywh -> xyxy, best first, by the image's path; images without proposals are left out
    assert list(proposals) == [str(index.records[0].path)]
    assert proposals[str(index.records[0].path)].tolist() == [[5, 6, 12, 14], [1, 2, 4, 6]]
    assert capsys.readouterr().out.startswith(f"wrote {path}: 2 results for 1 of ")
    path.write_text('[{"file_name": "a.jpg", "bbox": [1, 2]}]')
    warned = pytest.warns(SkippedSample, match=r"p\.json: entry 0: 'bbox' \[1, 2\] is not 4")
    with warned, pytest.raises(ValueError, match=r"p\.json: none of its 1 results is for an"):
        read_proposals(path, index)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"p\.json: cannot read the results"):
        read_proposals(path, index)


def test_images_of_one_file_name_in_two_folders_train_on_their_own_proposals(tmp_path):
    # a/img.jpg and b/img.jpg (a CSV naming both): each its own proposals, matched by path
    rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "img.jpg").symlink_to(RACCOON / "images" / "raccoon-1.jpg")
        rows.append(f"{folder}/img.jpg,650,417,raccoon,81,88,522,408")
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    index = read_dataset(tmp_path / "boxes.csv")
    entries = [
        {"file_name": f"{folder}/img.jpg", "bbox": [x, 10, 50, 50], "score": 0.5}
        for folder, x in (("a", 10), ("b", 300))
    ]
    (tmp_path / "p.json").write_text(json.dumps(entries))
    proposals = read_proposals(tmp_path / "p.json", index)
    dataset = DetectionDataset(index, train_transforms(417, 650, 0.0), proposals=proposals)
    firsts = {record.path.parent.name: dataset[i]["proposals"][0, 0].item()
              for i, record in enumerate(index.records)}  # fmt: skip
    assert firsts == {"a": pytest.approx(10), "b": pytest.approx(300)}
