"""What a new padded batch shape costs a training step, per backbone and memory layout: the
first step at each shape (cuDNN builds its plans for every convolution) against the next.

    PYTHONPATH=src python bench/shape_warmup.py --data ../shared/data/coco128

One COCO128 batch, zero-padded to each shape of ``--shapes``; random weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import torch
import torch.nn.functional as F
from bench_pipeline import build, train_config

from rpnkit.data import DetectionDataset, collate, read_dataset, train_transforms
from rpnkit.engine.trainer import Trainer


def padded_to(batch, shape):
    h, w = batch.images.shape[-2:]
    images = F.pad(batch.images, (0, shape[1] - w, 0, shape[0] - h))
    return dataclasses.replace(batch, images=images)


def timed_step(trainer, batch, step, device) -> float:
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    trainer._step(batch, step)
    torch.cuda.synchronize(device)
    return round((time.perf_counter() - start) * 1e3, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/coco128")
    parser.add_argument("--backbones", default="effnet,r50")
    parser.add_argument("--layouts", default="first,last")
    parser.add_argument("--shapes", default="1216x1216,1216x1344,1088x1216,1344x1344,1344x1216")
    parser.add_argument("--benchmark", action="store_true", help="cudnn.benchmark on")
    args = parser.parse_args()
    args.batch_size, args.workers = 8, 0
    torch.backends.cudnn.benchmark = args.benchmark
    device = torch.device("cuda")
    index = read_dataset(args.data, split="train2017")
    dataset = DetectionDataset(index, train_transforms(800, 1333, 0.5))
    base = collate([dataset[i] for i in range(8)])
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    for backbone in args.backbones.split(","):
        for layout in args.layouts.split(","):
            args.layout = layout
            model, spec = build(backbone, "frcnn", 80, "cpu", channels_last=layout == "last")
            trainer = Trainer(model, dataset, train_config(args, "bf16", 10**6), out_dir="/tmp/sw",
                              spec=spec, device=device, progress=False)  # fmt: skip
            trainer._set_up()
            row = {"backbone": backbone, "layout": layout, "benchmark": args.benchmark}
            for shape in shapes:
                batch = padded_to(base, shape).to(device)
                times = [timed_step(trainer, batch, i, device) for i in range(3)]
                row["x".join(map(str, shape))] = times
            trainer.watch.flush()
            print(json.dumps(row), flush=True)
            del trainer, model
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
