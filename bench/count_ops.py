"""How many ATen operators one Faster R-CNN training step dispatches, per preset: on a GPU
each top-level operator is at least one kernel launch, so this counts the launch overhead a
step pays, on any machine (the count does not depend on the device, nor much on image size).

    PYTHONPATH=src python bench/count_ops.py --presets effnet-lite0-fpn,r50-fpn

Random weights; synthetic images; forward and backward of one step after a warm-up step.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from rpnkit.data import SyntheticShapes, collate
from rpnkit.modeling.presets import (
    build_detector,
    detector_config,
    preset_config,
    without_pretrained_weights,
)


def count_step(preset: str, batch, num_classes: int) -> dict:
    """Top-level ATen operators (those not called by another ATen operator) of one training
    step, and the most frequent ones."""
    config = detector_config(without_pretrained_weights(preset_config(preset)), num_classes)
    model = build_detector(config).train()

    def step() -> None:
        out = model(batch.images, batch.image_sizes, batch.targets)
        sum(out.losses.values()).backward()

    step()  # warm-up: caches (anchors, level tables) filled
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    top = [
        e.name
        for e in prof.events()
        if e.name.startswith("aten::")
        and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
    ]
    counts = collections.Counter(top)
    return {"top_level_ops": len(top), "most_common": counts.most_common(10)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="effnet-lite0-fpn,r50-fpn")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--size", type=int, default=256, help="synthetic image side, px")
    args = parser.parse_args()
    torch.manual_seed(0)
    shapes = SyntheticShapes(args.batch_size, image_size=args.size)
    batch = collate([shapes[i] for i in range(args.batch_size)])
    num_classes = len(SyntheticShapes.class_names) + 1
    rows = {p: count_step(p, batch, num_classes) for p in args.presets.split(",")}
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
