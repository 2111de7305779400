"""The cross-tile merge of sliced inference: NMS of every tile's boxes against NMS of the best
of them first (``slicing.best_after_nms``), on the same boxes in one process.

    PYTHONPATH=src .venv/bin/python bench/bench_slice_merge.py --data ../shared/data/coco128

A COCO128 photograph is enlarged to ``--size`` (6000x4000: 126 tiles of 512 overlapping by
64), the ``tiny`` preset's RPN (random weights, seed 0) proposes ``--top`` boxes on every tile,
and the tiles' boxes, placed in the image, are merged both ways ``--repeat`` times. Prints
the seconds of each (the best of the repeats), their ratio, and whether the kept boxes agree
(the same boxes, but among those of the last kept score, which either may keep; the same
scores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.ops import batched_nms

from rpnkit.engine.runner import proposal_forward, proposal_limit
from rpnkit.engine.slicing import Merge, SliceConfig, best_after_nms, sliced_batches
from rpnkit.modeling.presets import build_model, preset_config


def tile_parts(args) -> tuple[torch.Tensor, torch.Tensor]:
    """Every tile's proposals, in the image's pixels: (N, 4) boxes and (N,) scores."""
    torch.manual_seed(0)
    model = build_model(preset_config("tiny")).eval()
    config = proposal_limit(model.rpn.config.test_proposals, args.top)
    photo = sorted(Path(args.data, "images", "train2017").glob("*.jpg"))[0]
    w, h = map(int, args.size.split("x"))
    pixels = torch.from_numpy(np.array(Image.open(photo).convert("RGB")))
    image = torch.nn.functional.interpolate(
        pixels.permute(2, 0, 1)[None].float(), size=(h, w), mode="bilinear"
    )[0].to(torch.uint8)
    item = {"image": image, "boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=int),
            "ignore": torch.zeros(0, dtype=bool), "image_id": 0, "file_name": photo.name,
            "scale": 1.0, "orig_size": (h, w)}  # fmt: skip
    kept = {}

    class Keep(Merge):
        def __call__(self, parts, single):
            kept["boxes"] = torch.cat([p[0] for p in parts])
            kept["scores"] = torch.cat([p[1] for p in parts])
            return super().__call__(parts[:1], True)

    forward = proposal_forward(model, config)
    for _ in sliced_batches(forward, [item], SliceConfig(512, 64), Keep("proposals", 0.7, 1),
                            resize=None, batch_size=8, device=torch.device("cpu")):  # fmt: skip
        pass
    return kept["boxes"], kept["scores"]


def best_of(fn, repeat: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/coco128")
    p.add_argument("--size", default="6000x4000")
    p.add_argument("--top", type=int, default=3000)
    p.add_argument("--iou", type=float, default=0.7)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    boxes, scores = tile_parts(args)
    groups = torch.zeros(len(boxes), dtype=torch.int64)
    every_s, every = best_of(lambda: batched_nms(boxes, scores, groups, args.iou), args.repeat)
    best_s, best = best_of(
        lambda: best_after_nms(boxes, scores, groups, args.iou, args.top), args.repeat
    )
    every = every[: args.top]
    # the same boxes, but where several share the last kept score (either may be kept)
    floor = scores[every].min()
    same = set(every[scores[every] > floor].tolist()) == set(best[scores[best] > floor].tolist())
    same = same and torch.equal(scores[every].sort().values, scores[best].sort().values)
    result = {
        "boxes": len(boxes), "top": args.top, "nms_of_every_box_s": round(every_s, 3),
        "best_first_s": round(best_s, 4), "ratio": round(every_s / best_s, 1),
        "same_boxes_and_scores": same,
        "device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
