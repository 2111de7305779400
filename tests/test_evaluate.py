import numpy as np
import pytest
import torch

from rpnkit.evaluation.recall import (
    format_recall_table,
    match_proposals,
    proposal_recall_summary,
)


def _table(preds, gts, crowd=None, **kw):
    preds = torch.tensor(preds, dtype=torch.float32).view(1, -1, 4)
    gts = torch.tensor(gts, dtype=torch.float32).view(1, -1, 4)
    valid = torch.ones(preds.shape[:2], dtype=torch.bool)
    mask = torch.ones(gts.shape[:2], dtype=torch.bool)
    crowd = None if crowd is None else torch.tensor([crowd])
    return match_proposals(preds, valid, gts, mask, crowd, **kw)


def test_hand_computed_recall():
    # GT A = [0, 0, 10, 10], GT B = [20, 20, 30, 30].
    # Proposal 1 covers A with IoU 50/150 = 0.33 (no match at 0.5);
    # proposal 2 equals B (IoU 1); proposal 3 covers A with IoU 80/100 = 0.8.
    table = _table(
        [[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 8]],
        [[0, 0, 10, 10], [20, 20, 30, 30]],
        iou_thresholds=(0.5, 0.75, 0.85),
        area_ranges=((0, 1e10),),
    )
    assert table.recall(1).tolist() == [[0.0, 0.0, 0.0]]  # the first proposal matches nothing
    assert table.recall(2).tolist() == [[0.5, 0.5, 0.5]]  # B found at every threshold
    assert table.recall(3).tolist() == [[1.0, 1.0, 0.5]]  # A found at 0.5 and 0.75, not 0.85


def test_one_proposal_matches_one_gt():
    # Two identical GT boxes, one proposal on them: greedy one-to-one matching finds one.
    table = _table([[0, 0, 10, 10]], [[0, 0, 10, 10], [0, 0, 10, 10]], area_ranges=((0, 1e10),))
    assert table.recall(1)[0, 0] == 0.5


def test_empty_predictions_give_zero_recall():
    preds = torch.zeros(2, 5, 4)
    valid = torch.zeros(2, 5, dtype=torch.bool)
    gts = torch.tensor([[[0.0, 0, 50, 50]], [[10.0, 10, 20, 20]]])
    table = match_proposals(preds, valid, gts, torch.ones(2, 1, dtype=torch.bool))
    summary = proposal_recall_summary(table, (10, 100))
    assert summary["AR@100"] == 0.0 and summary["recall@10@0.5"] == 0.0


def test_image_without_gt_does_not_count():
    preds = torch.tensor([[[0.0, 0, 50, 50]], [[0.0, 0, 50, 50]]])
    valid = torch.ones(2, 1, dtype=torch.bool)
    gts = torch.tensor([[[0.0, 0, 50, 50]], [[0.0, 0, 0, 0]]])
    mask = torch.tensor([[True], [False]])  # the second image has no GT
    summary = proposal_recall_summary(match_proposals(preds, valid, gts, mask), (10,))
    assert summary["AR@10"] == 1.0


def test_only_crowd_gt_gives_undefined_recall():
    table = _table([[0, 0, 50, 50]], [[0, 0, 50, 50]], crowd=[True])
    summary = proposal_recall_summary(table, (10,))
    assert summary["AR@10"] == -1.0  # COCO's "no GT to count"


def test_crowd_absorbs_proposals_without_counting():
    # The first proposal lies inside the crowd region and is absorbed by it; the second finds
    # the real GT.
    table = _table(
        [[0, 0, 10, 10], [50, 50, 60, 60]],
        [[0, 0, 40, 40], [50, 50, 60, 60]],
        crowd=[True, False],
        area_ranges=((0, 1e10),),
    )
    assert table.recall(2)[0].tolist() == [1.0] * 10


def test_sizes_without_gt_print_as_n_a():
    # regression: a dataset without small objects printed whole [small] rows of -1.000
    # (COCO's "no GT to count"), which the metrics keep
    summary = proposal_recall_summary(_table([[0, 0, 50, 50]], [[0, 0, 50, 50]]), (10, 100))
    assert summary["AR@10_small"] == -1.0 and summary["AR@10_medium"] == 1.0
    text = format_recall_table(summary, (10, 100))
    small = text.split("[small]")[1].split("[medium]")[0]
    assert small.count("n/a") == 6 and "-1" not in text
    assert "   AR 0.5:0.95    1.000    1.000" in text.split("[small]")[0]


def test_area_ranges_follow_coco():
    # a 20x20 box is small (area 400 <= 32^2), a 50x50 box medium, a 200x200 box large
    gts = [[0, 0, 20, 20], [100, 100, 150, 150], [300, 300, 500, 500]]
    table = _table([[0, 0, 20, 20]], gts)
    summary = proposal_recall_summary(table, (10,))
    assert summary["recall@10@0.5_small"] == 1.0
    assert summary["recall@10@0.5_medium"] == 0.0
    assert summary["recall@10@0.5_large"] == 0.0
    assert summary["recall@10@0.5"] == pytest.approx(1 / 3)


def test_equals_pycocotools_on_random_scenes():
    # pycocotools' COCOeval with useCats=0 is the reference: agreement to 1e-4 on every number.
    coco_mod = pytest.importorskip("pycocotools.coco")
    cocoeval_mod = pytest.importorskip("pycocotools.cocoeval")
    rng = np.random.default_rng(0)
    # dense scenes: GT boxes overlap each other, so the preference for non-ignored boxes and
    # the one-to-one rule both matter
    num_images, max_dets = 16, (1, 10, 100, 300)
    images, anns, results = [], [], []
    preds = torch.zeros(num_images, 100, 4)
    valid = torch.zeros(num_images, 100, dtype=torch.bool)
    gts = torch.zeros(num_images, 20, 4)
    mask = torch.zeros(num_images, 20, dtype=torch.bool)
    crowd = torch.zeros(num_images, 20, dtype=torch.bool)
    # COCO puts boxes in area ranges by the annotation's "area" (the mask's, smaller than the
    # box's): use 0.7 x the box area on both sides
    areas = torch.zeros(num_images, 20, dtype=torch.float64)
    ann_id = 1
    for i in range(num_images):
        images.append({"id": i + 1, "width": 400, "height": 400})
        n_gt = int(rng.integers(0, 20))
        for g in range(n_gt):
            xy = rng.uniform(0, 150, 2)
            wh = rng.uniform(5, 130, 2)
            is_crowd = bool(rng.random() < 0.15)
            gts[i, g] = torch.tensor([*xy, *(xy + wh)])
            mask[i, g] = True
            crowd[i, g] = is_crowd
            areas[i, g] = 0.7 * float(wh[0] * wh[1])
            anns.append(
                {
                    "id": ann_id,
                    "image_id": i + 1,
                    "category_id": 1,
                    "iscrowd": int(is_crowd),
                    "bbox": [float(v) for v in gts[i, g, :2]]
                    + [float(v) for v in gts[i, g, 2:] - gts[i, g, :2]],
                    "area": float(areas[i, g]),
                }
            )
            ann_id += 1
        n_det = int(rng.integers(0, 100))
        for d in range(n_det):
            # half of them jittered copies of GT boxes, so that matches happen
            if n_gt and rng.random() < 0.5:
                box = gts[i, int(rng.integers(n_gt))].numpy() + rng.normal(0, 4, 4)
            else:
                xy = rng.uniform(0, 300, 2)
                box = np.array([*xy, *(xy + rng.uniform(5, 150, 2))])
            box[2:] = np.maximum(box[2:], box[:2] + 1)
            preds[i, d] = torch.tensor(box, dtype=torch.float32)
            valid[i, d] = True
            score = 1.0 - d / 100  # already in decreasing order
            b = preds[i, d]
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": 1,
                    "score": score,
                    "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                }
            )
    gt_coco = coco_mod.COCO()
    gt_coco.dataset = {
        "info": {},  # pycocotools 2.0.10's loadRes copies it
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "object"}],
    }
    gt_coco.createIndex()
    dt_coco = gt_coco.loadRes(results)
    ev = cocoeval_mod.COCOeval(gt_coco, dt_coco, "bbox")
    ev.params.useCats = 0
    ev.params.maxDets = list(max_dets)
    ev.evaluate()
    ev.accumulate()
    reference = ev.eval["recall"][:, 0, :, :]  # (T, R, M)

    table = match_proposals(preds, valid, gts, mask, crowd, areas)
    for m, k in enumerate(max_dets):
        ours = table.recall(k).numpy().T  # (T, R)
        np.testing.assert_allclose(ours, reference[:, :, m], atol=1e-4)


def test_equals_pycocotools_on_real_coco128_proposals(tmp_path):
    # Real photos, real GT (COCO JSON with crowds and mask areas) and real proposals from a
    # trained model: rpnkit's recall equals COCOeval(useCats=0) to 1e-4 in every (IoU, area,
    # maxDets) cell, evaluating the very boxes written to the results JSON.
    import json
    from pathlib import Path

    coco_mod = pytest.importorskip("pycocotools.coco")
    cocoeval_mod = pytest.importorskip("pycocotools.cocoeval")
    from rpnkit.cli import main

    coco = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco128"
    ann_file = coco / "annotations" / "instances_train2017.json"
    small = ["--short-side", "256", "--max-size", "384", "--no-progress"]
    run = tmp_path / "run"
    assert main(["train", "--data", str(coco), "--split", "train2017", "--preset", "tiny",
                 "--steps", "8", "--batch-size", "4", "--workers", "0", "--out", str(run),
                 *small]) == 0  # fmt: skip
    results_path = tmp_path / "proposals.json"
    assert main(["propose", str(coco), "--split", "train2017", "--checkpoint",
                 str(run / "checkpoint.safetensors"), "--top", "300", "--out", str(results_path),
                 *small]) == 0  # fmt: skip
    results = json.loads(results_path.read_text())
    for r in results:
        r["category_id"] = 1  # class-agnostic: COCOeval with useCats=0 ignores it

    gt = coco_mod.COCO(str(ann_file))
    ev = cocoeval_mod.COCOeval(gt, gt.loadRes(results), "bbox")
    ev.params.useCats = 0
    ev.params.maxDets = [10, 100, 300]
    ev.evaluate()
    ev.accumulate()
    reference = ev.eval["recall"][:, 0, :, :]  # (T, R, M)

    data = json.loads(ann_file.read_text())
    image_ids = [img["id"] for img in data["images"]]
    row_of = {i: n for n, i in enumerate(image_ids)}
    anns = [[] for _ in image_ids]
    for a in data["annotations"]:
        anns[row_of[a["image_id"]]].append(a)
    dets = [[] for _ in image_ids]
    for r in results:  # results are written best first per image
        dets[row_of[r["image_id"]]].append(r["bbox"])
    g_max, d_max = max(map(len, anns)), max(map(len, dets))
    gts = torch.zeros(len(image_ids), g_max, 4, dtype=torch.float64)
    mask = torch.zeros(len(image_ids), g_max, dtype=torch.bool)
    crowd, areas = torch.zeros_like(mask), torch.zeros(len(image_ids), g_max, dtype=torch.float64)
    preds = torch.zeros(len(image_ids), d_max, 4, dtype=torch.float64)
    valid = torch.zeros(len(image_ids), d_max, dtype=torch.bool)
    for i, (image_anns, image_dets) in enumerate(zip(anns, dets)):
        for g, a in enumerate(image_anns):
            x, y, w, h = a["bbox"]
            gts[i, g] = torch.tensor([x, y, x + w, y + h], dtype=torch.float64)
            mask[i, g], crowd[i, g], areas[i, g] = True, bool(a["iscrowd"]), a["area"]
        for d, (x, y, w, h) in enumerate(image_dets):
            preds[i, d] = torch.tensor([x, y, x + w, y + h], dtype=torch.float64)
            valid[i, d] = True
    table = match_proposals(preds, valid, gts, mask, crowd, areas)
    assert crowd.sum() == 10 and len(results) > 100 * len(image_ids)
    for m, k in enumerate(ev.params.maxDets):
        np.testing.assert_allclose(table.recall(k).numpy().T, reference[:, :, m], atol=1e-4)
    # a non-trivial comparison: with 300 proposals per image some boxes are found, not all
    assert 0 < reference[0, 0, 2] < 1


# --- the fast matcher against the straightforward loop over ranks --------------------------


def _reference(*args, **kw):
    from rpnkit.evaluation.recall import _match_proposals_reference

    return _match_proposals_reference(*args, **kw)


def _random_batch(seed, num_images=24, max_dets=120, max_gt=16, grid=4.0):
    """Padded proposals and GT on a coarse grid (so equal IoUs, hence ties, are common), with
    duplicated GT boxes, crowds, invalid proposal slots and very different counts per image."""
    g = torch.Generator().manual_seed(seed)
    preds = torch.zeros(num_images, max_dets, 4)
    valid = torch.zeros(num_images, max_dets, dtype=torch.bool)
    gts = torch.zeros(num_images, max_gt, 4)
    mask = torch.zeros(num_images, max_gt, dtype=torch.bool)
    crowd = torch.zeros(num_images, max_gt, dtype=torch.bool)
    for i in range(num_images):
        n_gt = int(torch.randint(0, max_gt + 1, (1,), generator=g))
        xy = torch.randint(0, 12, (n_gt, 2), generator=g) * grid
        wh = torch.randint(1, 10, (n_gt, 2), generator=g) * grid
        gts[i, :n_gt] = torch.cat([xy, xy + wh], 1)
        if n_gt > 1:  # a duplicated box: equal IoUs with every proposal
            gts[i, n_gt - 1] = gts[i, 0]
        mask[i, :n_gt] = True
        crowd[i, :n_gt] = torch.rand(n_gt, generator=g) < 0.2
        n_det = int(torch.randint(0, max_dets + 1, (1,), generator=g)) if i % 5 else max_dets
        src = gts[i, torch.randint(0, max(n_gt, 1), (n_det,), generator=g)]
        jitter = torch.randint(-2, 3, (n_det, 4), generator=g) * grid
        rand_xy = torch.randint(0, 16, (n_det, 2), generator=g) * grid
        rand = torch.cat(
            [rand_xy, rand_xy + torch.randint(1, 8, (n_det, 2), generator=g) * grid], 1
        )
        near = (torch.rand(n_det, generator=g) < 0.6)[:, None] & (n_gt > 0)
        boxes = torch.where(near, src + jitter, rand)
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + grid)
        preds[i, :n_det] = boxes
        valid[i, :n_det] = torch.rand(n_det, generator=g) < 0.95  # a few holes
    areas = ((gts[..., 2] - gts[..., 0]) * (gts[..., 3] - gts[..., 1])).double()
    areas = areas * (0.5 + torch.rand(areas.shape, generator=g, dtype=torch.float64))
    return preds, valid, gts, mask, crowd, areas


@pytest.mark.parametrize("seed", range(6))
def test_equals_the_loop_over_ranks_on_random_scenes_with_ties_and_crowds(seed):
    args = _random_batch(seed)
    ranges = ((0, 1e10), (0, 16.0**2), (16.0**2, 40.0**2), (40.0**2, 1e10))
    for kw in (
        {},
        {"area_ranges": ranges},
        {"iou_thresholds": tuple(np.linspace(0.5, 1.0, 21))},  # recall_vs_iou's, up to 1
        {"iou_thresholds": (0.3, 0.9, 0.6)},  # unsorted, below 0.5
    ):
        ours, ref = match_proposals(*args, **kw), _reference(*args, **kw)
        assert torch.equal(ours.first_match, ref.first_match), kw
        assert torch.equal(ours.counted, ref.counted)


def test_chunks_of_images_give_the_same_table(monkeypatch):
    import rpnkit.evaluation.recall as recall

    args = _random_batch(7, num_images=30)
    whole = match_proposals(*args)
    for budget in (1, 2000, 20000):  # one image a chunk, a few images a chunk, more
        monkeypatch.setattr(recall, "_CHUNK_PAIRS", budget)
        assert len(recall._image_chunks(args[3], args[0].shape[1])) > 1
        assert torch.equal(match_proposals(*args).first_match, whole.first_match)


def test_a_chain_of_displacements_is_resolved_in_score_order():
    # Four boxes along x (height 10); every proposal prefers the box of the proposal before it:
    # p1 wants a (taken by p0) and falls back to b, p2 to c, p3 to d. At 0.75 only each
    # proposal's first choice is acceptable, so p1 finds nothing and b goes to p2.
    gts = [[0, 0, 10, 10], [2, 0, 12, 10], [4, 0, 14, 10], [6, 0, 16, 10]]
    preds = [[0, 0, 10, 10], [0.5, 0, 10.5, 10], [2.5, 0, 12.5, 10], [4.5, 0, 14.5, 10]]
    table = _table(preds, gts, iou_thresholds=(0.5, 0.75), area_ranges=((0, 1e10),))
    never = torch.iinfo(torch.int64).max
    assert table.first_match[0, :, 0].tolist() == [[0, 1, 2, 3], [0, 2, 3, never]]
    ref = _reference(*_args(preds, gts), iou_thresholds=(0.5, 0.75), area_ranges=((0, 1e10),))
    assert torch.equal(table.first_match, ref.first_match)


def _args(preds, gts, crowd=None):
    preds = torch.tensor(preds, dtype=torch.float32).view(1, -1, 4)
    gts = torch.tensor(gts, dtype=torch.float32).view(1, -1, 4)
    crowd = None if crowd is None else torch.tensor([crowd])
    valid = torch.ones(preds.shape[:2], dtype=torch.bool)
    return preds, valid, gts, torch.ones(gts.shape[:2], dtype=torch.bool), crowd


def test_ranks_count_the_proposals_that_match_nothing():
    # Five proposals far from the GT box come first: they are no candidates, but they still
    # use up the budget, so the match has rank 5.
    far = [[100, 100, 110, 110]] * 5
    table = _table([*far, [0, 0, 10, 10]], [[0, 0, 10, 10]], area_ranges=((0, 1e10),))
    assert table.first_match[0, :, 0, 0].tolist() == [5] * 10
    assert table.recall(5)[0, 0] == 0.0 and table.recall(6)[0, 0] == 1.0


def test_images_without_candidates_crowd_only_images_and_no_gt_at_all():
    # image 0: proposals nowhere near its GT; image 1: only a crowd box, which absorbs its
    # proposals; image 2: a GT box found by the second proposal; image 3: no GT
    preds = torch.tensor(
        [
            [[200.0, 200, 220, 220], [300, 300, 330, 330]],
            [[0, 0, 10, 10], [0, 0, 50, 50]],
            [[60, 60, 70, 70], [0, 0, 20, 20]],
            [[0, 0, 20, 20], [0, 0, 0, 0]],
        ]
    )
    gts = torch.tensor([[[0.0, 0, 20, 20]], [[0, 0, 50, 50]], [[0, 0, 20, 20]], [[0, 0, 0, 0]]])
    mask = torch.tensor([[True], [True], [True], [False]])
    crowd = torch.tensor([[False], [True], [False], [False]])
    valid = torch.ones(4, 2, dtype=torch.bool)
    table = match_proposals(preds, valid, gts, mask, crowd)
    ref = _reference(preds, valid, gts, mask, crowd)
    assert torch.equal(table.first_match, ref.first_match)
    assert table.first_match[0, 0, :, 0].tolist()[:3] == [torch.iinfo(torch.int64).max, 0, 1]
    assert table.recall(2)[0, 0] == 0.5  # image 2's box found, image 0's not; crowd not counted
    # no proposal at all, and a batch without any GT box
    none_valid = torch.zeros_like(valid)
    assert torch.equal(
        match_proposals(preds, none_valid, gts, mask, crowd).first_match,
        _reference(preds, none_valid, gts, mask, crowd).first_match,
    )
    empty = match_proposals(preds, valid, gts[:, :0], mask[:, :0])
    assert empty.first_match.shape == (4, 10, 4, 0) and (empty.recall(10) == -1).all()
