"""Channels-first against channels-last convolutions on the CPU: inference (the first call at
each new size, then the next) and training steps, per preset; random weights.

    PYTHONPATH=src python bench/bench_layout_cpu.py

rpnkit runs NHWC on the CPU by default (``engine.device.memory_layout_for``); this is the
measurement behind that choice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from rpnkit.data import SyntheticShapes, collate
from rpnkit.engine.device import fold_for_inference
from rpnkit.modeling.presets import (
    build_detector,
    build_model,
    detector_config,
    preset_config,
    without_pretrained_weights,
)


def ms(fn, repeats: int = 1) -> int:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return round((time.perf_counter() - start) / repeats * 1e3)


def rpn_inference(sizes) -> dict:
    """effnet-lite0-fpn's RPN, folded as the runtime runs it, 2 images: (first, next) ms."""
    torch.manual_seed(0)
    model = fold_for_inference(
        build_model(without_pretrained_weights(preset_config("effnet-lite0-fpn"))).eval()
    )
    out = {}
    for layout in ("first", "last"):
        model.use_channels_last(layout == "last")
        for h, w in sizes:
            images = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8)
            image_sizes = torch.tensor([[h, w]] * 2)

            def forward(images=images, image_sizes=image_sizes):
                with torch.no_grad():
                    model(images, image_sizes)

            out[f"{layout} {h}x{w}"] = (ms(forward), ms(forward, 2))
    return out


def detector_steps(preset: str, size: int, images: int = 4) -> dict:
    """A Faster R-CNN on ``preset``: ms per training step and per inference, each layout."""
    torch.manual_seed(0)
    model = build_detector(detector_config(without_pretrained_weights(preset_config(preset)), 10))
    shapes = SyntheticShapes(images, image_size=size)
    batch = collate([shapes[i] for i in range(images)])

    def step():
        out = model(batch.images, batch.image_sizes, batch.targets)
        sum(out.losses.values()).backward()

    def infer():
        with torch.no_grad():
            model(batch.images, batch.image_sizes)

    out = {}
    for layout in ("first", "last", "first", "last"):  # twice, interleaved
        model.first_stage.use_channels_last(layout == "last")
        model.train()
        step()
        train = ms(step, 3)
        model.eval()
        infer()
        out.setdefault(layout, []).append({"train_ms": train, "infer_ms": ms(infer, 3)})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="effnet-lite0-fpn:320,tiny:256,r50-fpn:320")
    args = parser.parse_args()
    result = {
        "threads": torch.get_num_threads(),
        "rpn_inference_first_next_ms": rpn_inference(((416, 608), (448, 576), (384, 640))),
    }
    for item in args.presets.split(","):
        preset, size = item.split(":")
        result[f"{preset} detector at {size} px"] = detector_steps(preset, int(size))
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
