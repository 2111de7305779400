import torch

from rpnkit.testing import same_proposals


def test_same_proposals_allows_only_reordering_of_equal_scores():
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 3, 3]])
    scores = torch.tensor([0.9, 0.9, 0.5])
    swapped = boxes[[1, 0, 2]]
    assert same_proposals(boxes, scores, swapped, scores)  # tie reordered: same
    moved = boxes.clone()
    moved[2, 0] += 1
    assert not same_proposals(boxes, scores, moved, scores)  # a box differs
    assert not same_proposals(boxes, scores, boxes, torch.tensor([0.9, 0.9, 0.4]))
    unranked = torch.tensor([0.5, 0.9, 0.9])
    assert not same_proposals(boxes[[2, 0, 1]], unranked, boxes, scores)  # not sorted
    assert not same_proposals(boxes[:2], scores[:2], boxes, scores)  # count differs
