"""The Triton NMS kernels, run on the CPU through Triton's interpreter (TRITON_INTERPRET=1) in a
subprocess, against torchvision's batched_nms. On a GPU, tests/test_gpu.py runs them compiled."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from rpnkit.modeling.nms import nms_keep

SCRIPT = textwrap.dedent(
    """
    import torch
    from rpnkit.modeling.kernels.nms_triton import nms_keep_triton
    from rpnkit.modeling.nms import _nms_keep_torchvision

    g = torch.Generator().manual_seed(0)
    G, N = 2, 70
    xy = torch.rand(G, N, 2, generator=g) * 100
    wh = torch.rand(G, N, 2, generator=g) * 40 + 1
    boxes = torch.cat([xy, xy + wh], -1)
    valid = torch.rand(G, N, generator=g) > 0.1
    classes = torch.randint(0, 3, (G, N), generator=g, dtype=torch.int32)
    for cls in (torch.zeros_like(classes), classes):
        ref = _nms_keep_torchvision(boxes, valid, cls, 0.5)
        assert torch.equal(nms_keep_triton(boxes, valid, cls, 0.5, N), ref)
        for max_keep in (1, 5, 40):
            ours = nms_keep_triton(boxes, valid, cls, 0.5, max_keep)
            for o, r in zip(ours, ref):
                first = r.nonzero().squeeze(1)[:max_keep]
                # exact up to the max_keep-th kept box; the scan stops at the end of that word
                assert torch.equal(o.nonzero().squeeze(1)[: len(first)], first)
                assert len(first) <= o.sum() < max_keep + 32
                assert not (o & ~r).any()
    print("ok")
    """
)


def test_triton_nms_kernels_in_the_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


def test_nms_keep_by_class_hand_case():
    # Two overlapping boxes of class 1 (the lower one suppressed), one of class 2 overlapping
    # both (kept: another class), an invalid one.
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [0, 0, 10, 10.0]]])
    valid = torch.tensor([[True, True, True, False]])
    classes = torch.tensor([[1, 1, 2, 1]])
    keep = nms_keep(boxes, valid, 0.5, classes=classes)
    assert keep.tolist() == [[True, False, True, False]]
    assert nms_keep(boxes, valid, 0.5).tolist() == [[True, False, False, False]]
